"""Held-out evaluation: does an adapter prefer what the family chose over what it passed on?

For each held-out line the target and every negative are scored as continuations of the same
prompt (packed in one row, see ``data``), by summed log-likelihood (the measure serving ranks
candidates by).
``preference_accuracy`` is the share of (target, negative) pairs where the target scores
strictly higher (null without negatives); ``heldout_loss`` is the mean negative log-likelihood
per target token, over all held-out target tokens (null without held-out lines).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from insan_edge.training.data import Group, TokenizerLike, build_group, collate
from insan_edge.training.job import Example
from insan_edge.training.model import sequence_nll


def eval_items(
    tokenizer: TokenizerLike, prompt_ids: Callable[[str], list[int]], heldout: list[Example],
    max_tokens: int,
) -> list[Group]:  # fmt: skip
    """One packed group per held-out line: the chosen title, then each one passed over."""
    return [
        build_group(tokenizer, prompt_ids(e.prompt), [e.target, *e.negatives], max_tokens)
        for e in heldout
    ]


def score(
    model: Any, items: list[Group], pad_id: int, device: Any, group: int,
    check: Callable[[], None],
) -> dict[str, Any]:  # fmt: skip
    """Metrics of the model as it is now (whichever adapter is active); ``check`` may raise.
    ``group`` held-out lines go through the model at a time."""
    import torch

    loss, tokens, pairs, wins = 0.0, 0, 0, 0
    with torch.no_grad():
        for g in range(0, len(items), group):
            check()
            chunk = items[g : g + group]
            batch = collate(chunk, pad_id, device)
            total = [float(x) for x in sequence_nll(model, batch)[0].tolist()]
            for item, start in zip(chunk, batch.first, strict=True):
                nll = total[start : start + len(item.continuations)]
                loss += nll[0]
                tokens += item.n_target
                pairs += len(nll) - 1
                wins += sum(1 for other in nll[1:] if nll[0] < other)
    return {
        "preference_accuracy": wins / pairs if pairs else None,
        "heldout_loss": loss / tokens if tokens else None,
        "pairs": pairs,
        "examples": len(items),
    }


def evaluate_all(
    model: Any, items: list[Group], pad_id: int, device: Any, group: int,
    check: Callable[[], None], announce: Callable[[str], None], current_error: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """candidate (the trained "default" adapter), current (loaded beside it by ``load_model``,
    if the family has one) and the base."""
    from insan_edge.training.model import CURRENT

    model.eval()
    result: dict[str, Any] = {}
    announce("candidate")
    model.set_adapter("default")
    result["candidate"] = score(model, items, pad_id, device, group, check)
    result["current"] = None
    if current_error is not None:
        result["current_error"] = current_error
    if CURRENT in model.peft_config:
        announce("current")
        model.set_adapter(CURRENT)
        result["current"] = score(model, items, pad_id, device, group, check)
        model.set_adapter("default")
    announce("base")
    with model.disable_adapter():
        result["base"] = score(model, items, pad_id, device, group, check)
    return result
