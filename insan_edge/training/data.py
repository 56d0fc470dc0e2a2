"""Token groups and batches: the same ids llama.cpp sees, the loss on the continuations only.

A training or evaluation line is one prompt and its continuations: the chosen title first, then
the titles passed over in the same moment. They are packed into one row, the prompt once and
each continuation after it, and a block attention mask lets each continuation see the prompt
and itself only, at the positions it would have right after the prompt. Each continuation is
scored exactly as if it were its own sequence (prompt + continuation, as serving scores a
candidate after a cached prompt), while the prompt, by far the longer part, is run once.

A prompt and its continuations are tokenized separately (BOS first when the model adds one).
When the prompt plus the longest continuation exceeds ``max_tokens`` the prompt loses tokens
from the front (BOS kept); a continuation that alone does not fit is cut at its end.
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
class Group:
    prompt: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]  # the chosen one first

    @property
    def width(self) -> int:
        """Tokens in the packed row."""
        return len(self.prompt) + sum(len(c) for c in self.continuations)

    @property
    def n_target(self) -> int:
        """Scored tokens of the first continuation (a sequence's very first token cannot be)."""
        return len(self.continuations[0]) - (0 if self.prompt else 1)

    @property
    def pairs(self) -> int:
        return len(self.continuations) - 1


def build_group(
    tokenizer: TokenizerLike, prompt_ids: Seq[int], continuations: Seq[str], max_tokens: int
) -> Group:
    """``prompt_ids`` (BOS included if any) and each continuation, cut to ``max_tokens``."""
    has_bos = bool(prompt_ids) and tokenizer.add_bos and prompt_ids[0] == tokenizer.bos_token_id
    head = list(prompt_ids[:1]) if has_bos else []
    body = list(prompt_ids[1:] if has_bos else prompt_ids)
    room = max_tokens - len(head)
    conts = [tokenizer.encode(c)[: max(room, 1)] for c in continuations]
    keep = max(room - max(len(c) for c in conts), 0)
    body = body[len(body) - keep :] if keep else []
    return Group(tuple(head + body), tuple(tuple(c) for c in conts))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The training order of ``n`` examples in ``epoch``: the same for the same seed, always."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def step_members(order: list[int], step: int, batch_size: int) -> list[int]:
    return order[step * batch_size : (step + 1) * batch_size]


def micro_batches(members: list[int], groups: list[Group], micro: int) -> list[list[int]]:
    """A step's examples, widest first (less padding), cut into micro-batches."""
    ordered = sorted(members, key=lambda i: (-groups[i].width, i))
    return [ordered[i : i + micro] for i in range(0, len(ordered), micro)]


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, 1, T, T] bool: which key each query may see
    position_ids: torch.Tensor  # [B, T]
    positions: torch.Tensor  # [N] flat indices into B*T of the positions that predict a target
    labels: torch.Tensor  # [N] the target token each of those positions predicts
    owner: torch.Tensor  # [N] which continuation (flat, group by group) each belongs to
    size: int  # continuations in the batch
    first: tuple[int, ...]  # the flat index of each group's first (chosen) continuation


def collate(groups: Seq[Group], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    import torch

    width = max(g.width for g in groups)
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(groups), width), dtype=torch.long)
    mask = torch.zeros((len(groups), 1, width, width), dtype=torch.bool)
    mask[:, 0] = torch.eye(width, dtype=torch.bool)  # padding sees itself: no empty row
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    positions: list[int] = []
    labels: list[int] = []
    owner: list[int] = []
    first: list[int] = []
    seq = 0
    for row, g in enumerate(groups):
        p = len(g.prompt)
        ids[row, :p] = torch.tensor(g.prompt, dtype=torch.long)
        pos[row, :p] = torch.arange(p)
        mask[row, 0, :p, :p] = causal[:p, :p]
        first.append(seq)
        at = p
        for c in g.continuations:
            n = len(c)
            ids[row, at : at + n] = torch.tensor(c, dtype=torch.long)
            pos[row, at : at + n] = torch.arange(p, p + n)
            mask[row, 0, at : at + n, :p] = True
            mask[row, 0, at : at + n, at : at + n] = causal[:n, :n]
            for j in range(n):
                # Token j is predicted by the position before it: the prompt's last token for
                # the first (nothing predicts the very first token of a row without a prompt).
                before = at + j - 1 if j else p - 1
                if before >= 0:
                    positions.append(row * width + before)
                    labels.append(c[j])
                    owner.append(seq)
            at += n
            seq += 1
    return Batch(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=pos.to(device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        labels=torch.tensor(labels, dtype=torch.long, device=device),
        owner=torch.tensor(owner, dtype=torch.long, device=device),
        size=seq,
        first=tuple(first),
    )
