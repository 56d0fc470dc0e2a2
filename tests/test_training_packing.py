"""Packed scoring: a prompt run once with all its continuations after it scores each
continuation exactly as a plain forward pass over prompt + continuation does.

Tiny random Llama and Gemma 3 models (float32, built here). The Gemma 3 one has a sliding
window shorter than the prompts, so the windowed mask of its local layers is exercised too.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from insan_edge.training.data import Group, collate  # noqa: E402
from insan_edge.training.model import sequence_nll  # noqa: E402

VOCAB = 97


def _llama() -> Any:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _gemma3() -> Any:
    config = transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        sliding_window=5, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        final_logit_softcapping=30.0,
    )  # fmt: skip
    return transformers.Gemma3ForCausalLM(config)


def _peft(model: Any) -> Any:
    torch.manual_seed(0)
    model.config._attn_implementation = "sdpa"
    with warnings.catch_warnings():
        # peft asks transformers' deprecated `is_gradient_checkpointing` (FutureWarning, v6).
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = peft.get_peft_model(
            model,
            peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
        )
    with torch.no_grad():  # a LoRA that changes the outputs (B starts at zero)
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return wrapped.eval()


def _plain_nll(model: Any, prompt: tuple[int, ...], cont: tuple[int, ...]) -> float:
    ids = torch.tensor([prompt + cont])
    logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = max(len(prompt), 1)
    return -sum(float(logp[t - 1, ids[0, t]]) for t in range(start, ids.shape[1]))


def _groups(rng: random.Random) -> list[Group]:
    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(1, VOCAB) for _ in range(n))

    return [
        Group(ids(9), (ids(3), ids(1), ids(5))),
        Group(ids(4), (ids(2),)),  # no negatives; the narrowest row: padded
        Group(ids(12), (ids(4), ids(4))),
        Group((), (ids(3), ids(2))),  # no prompt: a continuation's first token is unscored
    ]


@pytest.mark.parametrize("build", [_llama, _gemma3], ids=["llama", "gemma3"])
def test_packed_scores_equal_plain_forward_passes(build: Any) -> None:
    torch.manual_seed(1)
    model = _peft(build())
    groups = _groups(random.Random(2))
    batch = collate(groups, pad_id=0)
    with torch.no_grad():
        total, counts = sequence_nll(model, batch)
        expected = [_plain_nll(model, g.prompt, c) for g in groups for c in g.continuations]
    assert total.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-4)
    want = [len(c) - (0 if g.prompt else 1) for g in groups for c in g.continuations]
    assert counts.tolist() == want
    assert batch.first == (0, 3, 4, 6)
    assert [g.n_target for g in groups] == [want[i] for i in batch.first]


def test_gradients_of_packed_scores_equal_plain_ones() -> None:
    torch.manual_seed(3)
    model = _peft(_gemma3()).train()
    for module in model.modules():  # no dropout: the two passes must be the same function
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    groups = _groups(random.Random(4))[:3]
    params = [p for p in model.parameters() if p.requires_grad]

    total, _ = sequence_nll(model, collate(groups, pad_id=0))
    weights = torch.linspace(0.5, 1.5, total.numel())
    (total * weights).sum().backward()
    packed = [p.grad.clone() for p in params]
    model.zero_grad()
    k = 0
    for g in groups:
        for c in g.continuations:
            ids = torch.tensor([g.prompt + c])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            nll = -sum(logp[t - 1, ids[0, t]] for t in range(len(g.prompt), ids.shape[1]))
            (float(weights[k]) * nll).backward()
            k += 1
    for a, p in zip(packed, params, strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-3, atol=1e-5)


def test_the_pair_loss_pushes_each_chosen_title_above_the_ones_passed_over() -> None:
    from insan_edge.training.model import pair_loss

    groups = _groups(random.Random(5))  # 3, 1, 2 and 2 continuations: 2 + 0 + 1 + 1 pairs
    batch = collate(groups, pad_id=0)
    nll = torch.tensor([1.0, 3.0, 0.0, 9.0, 2.0, 2.0, 5.0, 4.0], requires_grad=True)
    loss = pair_loss(nll, batch, beta=0.5)
    F = torch.nn.functional
    gaps = torch.tensor([1.0 - 3.0, 1.0 - 0.0, 2.0 - 2.0, 5.0 - 4.0])
    assert float(loss.detach()) == pytest.approx(float(F.softplus(0.5 * gaps).sum()))
    loss.backward()
    assert nll.grad is not None
    assert float(nll.grad[0]) > 0 and float(nll.grad[1]) < 0  # chosen up, passed over down
    assert float(nll.grad[3]) == 0.0  # a group without negatives adds nothing
    assert float(pair_loss(nll, collate(groups[1:2], pad_id=0), beta=0.5).detach()) == 0.0
