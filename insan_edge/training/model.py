"""The QLoRA model and the one loss both training and evaluation use.

The base is loaded from the prepared bf16 safetensors straight into 4-bit nf4 (bitsandbytes;
CPU here, CUDA on the Jetson); transformers 5 always loads with low memory use (the old
``low_cpu_mem_usage`` flag is gone). Compute is bf16: on this CPU (AVX512-BF16) it keeps the
262k-row embedding at 335 MB instead of 670 MB, and the resident set after loading Gemma 3
270M at 0.69 GB against 1.05 GB with float32 compute. The LoRA weights themselves stay float32
(PEFT's default), so the optimizer updates them in full precision.

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

from insan_edge.training.data import Batch
from insan_edge.training.job import LoraSpec

if TYPE_CHECKING:
    import torch

LOSS_CHUNK = 32  # target positions per output-layer chunk: 32 x 262k x 4 B = 34 MB for Gemma


def pick_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quiet_libraries() -> None:
    """No progress bars or advice on stdout/stderr from the libraries; our own lines only."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # bitsandbytes says once that an optional kernel package is missing; its fallback is used.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def load_model(
    weights_dir: Path, lora: LoraSpec, device: torch.device, gradient_checkpointing: bool, seed: int
) -> Any:
    """The base in nf4 with a fresh LoRA adapter named "default" (seeded), ready to train."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = torch.bfloat16
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
        return get_peft_model(base, config)


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


def sequence_nll(
    model: Any, batch: Batch, chunk: int = LOSS_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of each sequence's continuation, and its token count."""
    import torch
    from torch.utils.checkpoint import checkpoint

    base = model.get_base_model()
    decoder = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)
    out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
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
