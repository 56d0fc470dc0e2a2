"""Token sequences and batches: the same ids llama.cpp sees, the loss on the continuation only.

A prompt and its continuation are tokenized separately and concatenated (BOS first when the
model adds one), which is how serving scores a candidate after a cached prompt. A sequence
longer than ``max_tokens`` loses prompt tokens from the front (BOS kept); a continuation that
alone does not fit is cut at its end.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class TokenizerLike(Protocol):
    bos_token_id: int | None
    add_bos: bool

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Sequence:
    ids: tuple[int, ...]
    start: int  # index of the first continuation token

    @property
    def n_target(self) -> int:
        """Continuation tokens that are scored (the very first token of a sequence cannot be)."""
        return len(self.ids) - max(self.start, 1)


def build_sequence(
    tokenizer: TokenizerLike, prompt_ids: Seq[int], continuation: str, max_tokens: int
) -> Sequence:
    """``prompt_ids`` (BOS included if any) followed by ``continuation``, cut to ``max_tokens``."""
    has_bos = bool(prompt_ids) and tokenizer.add_bos and prompt_ids[0] == tokenizer.bos_token_id
    head = list(prompt_ids[:1]) if has_bos else []
    body = list(prompt_ids[1:] if has_bos else prompt_ids)
    cont = tokenizer.encode(continuation)
    room = max_tokens - len(head)
    cont = cont[: max(room, 1)]
    keep = max(room - len(cont), 0)
    body = body[len(body) - keep :] if keep else []
    ids = head + body + cont
    return Sequence(tuple(ids), len(head) + len(body))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The training order of ``n`` examples in ``epoch``: the same for the same seed, always."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def step_members(order: list[int], step: int, batch_size: int) -> list[int]:
    return order[step * batch_size : (step + 1) * batch_size]


def micro_batches(members: list[int], seqs: list[Sequence], micro: int) -> list[list[int]]:
    """A step's examples, longest first (less padding), cut into micro-batches."""
    ordered = sorted(members, key=lambda i: (-len(seqs[i].ids), i))
    return [ordered[i : i + micro] for i in range(0, len(ordered), micro)]


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T]
    positions: torch.Tensor  # [N] flat indices into B*T of the positions that predict a target
    labels: torch.Tensor  # [N] the target token each of those positions predicts
    owner: torch.Tensor  # [N] which sequence each target token belongs to
    size: int  # B


def collate(seqs: Seq[Sequence], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    import torch

    width = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    positions: list[int] = []
    labels: list[int] = []
    owner: list[int] = []
    for row, s in enumerate(seqs):
        ids[row, : len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
        mask[row, : len(s.ids)] = 1
        for t in range(max(s.start, 1), len(s.ids)):
            positions.append(row * width + t - 1)
            labels.append(s.ids[t])
            owner.append(row)
    return Batch(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        labels=torch.tensor(labels, dtype=torch.long, device=device),
        owner=torch.tensor(owner, dtype=torch.long, device=device),
        size=len(seqs),
    )
