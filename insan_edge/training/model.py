"""The QLoRA model and the one loss both training and evaluation use.

The base is loaded from the prepared bf16 safetensors straight into 4-bit nf4 (bitsandbytes;
CPU here, CUDA on the Jetson); transformers 5 always loads with low memory use (the old
``low_cpu_mem_usage`` flag is gone). Compute is bf16 where the hardware does bf16 natively (a
CUDA GPU that supports it, the Jetson's included; a CPU with AVX512-BF16 or AMX): on such a
CPU it keeps the 262k-row embedding at 335 MB instead of 670 MB, and the resident set after
loading Gemma 3 270M at 0.69 GB against 1.05 GB with float32 compute. Elsewhere compute is
float32: on an AVX2-only CPU (AMD EPYC, torch 2.13) a 512x640 by 640x2048 matmul takes 2.9 s
in bf16 against 15 ms in float32, and a QLoRA step on Gemma 3 270M about six minutes. The LoRA
weights themselves stay float32 (PEFT's default), so the optimizer updates them in full
precision.

The loss never builds logits for prompt positions: the decoder's final hidden states are
gathered at the positions that predict a continuation token, and the output layer runs on them
in chunks, each recomputed in the backward pass, so at most one chunk's [chunk, vocab] logits
(and their gradient) exist at a time.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insan_edge.logs import kv
from insan_edge.training.data import Batch
from insan_edge.training.job import LoraSpec

if TYPE_CHECKING:
    import torch

LOSS_CHUNK = 32  # target positions per output-layer chunk: 32 x 262k x 4 B = 34 MB for Gemma


def pick_device() -> torch.device:
    """CUDA when torch has it and a tensor can be made there (bitsandbytes then quantizes on
    the GPU), else the CPU; the choice and its reason go to the log (the trainer's stderr)."""
    import torch

    from insan_edge.devices import training_device

    cuda, error = torch.cuda.is_available(), None
    if cuda:
        try:
            torch.ones(1, device="cuda").add_(1)
        except (RuntimeError, AssertionError) as exc:  # driver/arch mismatch, no kernel image
            error = str(exc).splitlines()[0][:200]
    placement = training_device(cuda, error)
    level = logging.INFO if placement.device == "cuda" or not cuda else logging.WARNING
    logging.getLogger("insan_edge.training").log(
        level, kv("trainer.device", device=placement.device, why=placement.reason)
    )
    return torch.device(placement.device)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where ``device`` computes it natively, else float32 (emulated bf16 is ~200x slower)."""
    import torch

    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:  # oneDNN says whether this CPU has bf16 instructions (AVX512-BF16, AMX)
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        native = bool(probe()) if probe is not None else False
    dtype = torch.bfloat16 if native else torch.float32
    logging.getLogger("insan_edge.training").info(
        kv("trainer.compute", device=device.type, dtype=str(dtype).removeprefix("torch."))
    )
    return dtype


def quiet_libraries() -> None:
    """No progress bars or advice on stdout/stderr from the libraries; our own lines only."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # bitsandbytes says once that an optional kernel package is missing; its fallback is used.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


CURRENT = "current"  # the name of the family's serving adapter beside the one being trained


def load_model(
    weights_dir: Path,
    lora: LoraSpec,
    device: torch.device,
    gradient_checkpointing: bool,
    seed: int,
    current: Path | None = None,
) -> tuple[Any, str | None]:
    """The base in nf4 with a fresh LoRA adapter named "default" (seeded), ready to train, and
    the family's current adapter (``current``, a PEFT directory) loaded beside it, frozen.

    The current adapter must be loaded before the first forward pass: on the CPU, bitsandbytes
    repacks each 4-bit weight in place at its first use, and PEFT loading an adapter afterwards
    rewraps the weights in their old shape over the repacked data. Measured here on Gemma 3
    270M: the base's held-out loss went from 5.97 to 21.7 per token once an adapter was loaded
    after training. A current adapter that cannot be loaded is reported, not fatal: the second
    value says why (None when it loaded or there is none).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = compute_dtype(device)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=False,
    )
    base = AutoModelForCausalLM.from_pretrained(
        str(weights_dir),
        quantization_config=quant,
        dtype=compute,
        device_map={"": device},
        attn_implementation="sdpa",
    )
    base.requires_grad_(False)
    base.config.use_cache = False
    if gradient_checkpointing:
        base.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft scales by any float alpha
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # peft asks transformers' deprecated `is_gradient_checkpointing` (FutureWarning, v6).
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(base, config)
        problem = None
        if current is not None:
            try:
                model.load_adapter(str(current), adapter_name=CURRENT, is_trainable=False)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                # An adapter this base cannot take is no competitor; say why instead of failing.
                problem = f"{type(exc).__name__}: {exc}"[:500]
            model.set_adapter("default")
    return model, problem


def trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters, by name, in a fixed order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _chunk_nll(head: Any, cap: float | None, hidden: torch.Tensor, labels: torch.Tensor) -> Any:
    import torch
    import torch.nn.functional as F

    logits = head(hidden).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, labels, reduction="none")


def attention_masks(config: Any, batch: Batch) -> Any:
    """The batch's block mask as the decoder takes it: for a model with sliding-window layers
    (Gemma 3), a mapping by layer type, where those layers also drop keys a window or more
    positions back (the packing keeps each continuation's own positions, so this is the mask
    it would get alone)."""
    mask = batch.attention_mask
    types = set(getattr(config, "layer_types", None) or ())
    window = getattr(config, "sliding_window", None)
    if not types:
        return mask
    out = {kind: mask for kind in types}
    if "sliding_attention" in types and window:
        pos = batch.position_ids
        near = (pos[:, None, :, None] - pos[:, None, None, :]) < window
        out["sliding_attention"] = mask & near
    return out


def sequence_nll(
    model: Any, batch: Batch, chunk: int = LOSS_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of each continuation in the batch (flat, group by group),
    and its token count."""
    import torch
    from torch.utils.checkpoint import checkpoint

    base = model.get_base_model()
    decoder = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)
    out = decoder(
        input_ids=batch.input_ids,
        attention_mask=attention_masks(base.config, batch),
        position_ids=batch.position_ids,
        use_cache=False,
    )
    hidden = out.last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.positions)
    total = torch.zeros(batch.size, dtype=torch.float32, device=flat.device)
    for i in range(0, flat.shape[0], chunk):
        h, labels = flat[i : i + chunk], batch.labels[i : i + chunk]
        if torch.is_grad_enabled():
            nll = checkpoint(_chunk_nll, head, cap, h, labels, use_reentrant=False)
        else:
            nll = _chunk_nll(head, cap, h, labels)
        total = total.index_add(0, batch.owner[i : i + chunk], nll)
    counts = torch.bincount(batch.owner, minlength=batch.size)
    return total, counts


def pair_loss(total: torch.Tensor, batch: Batch, beta: float) -> torch.Tensor:
    """Summed pairwise logistic loss of the batch's groups: ``softplus(beta * (nll_chosen -
    nll_passed))`` for each title passed over, so the chosen title's log-likelihood is pushed
    above each of the others in the same moment, the comparison serving ranks by (reference
    free, as in CPO; the target's own loss keeps the titles likely)."""
    import torch
    import torch.nn.functional as F

    ends = [*batch.first[1:], batch.size]
    chosen: list[int] = []
    passed: list[int] = []
    for start, end in zip(batch.first, ends, strict=True):
        chosen += [start] * (end - start - 1)
        passed += range(start + 1, end)
    if not passed:
        return total.new_zeros(())
    index = torch.tensor(chosen, device=total.device), torch.tensor(passed, device=total.device)
    return F.softplus(beta * (total[index[0]] - total[index[1]])).sum()
