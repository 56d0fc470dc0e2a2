"""The plain transformers + peft QLoRA loop that ``bench/train.py`` compares the trainer with.

    python bench/train_baseline.py SPEC.json

Written the way a QLoRA notebook does it, with nothing tuned for memory:

- ``AutoModelForCausalLM.from_pretrained(weights_dir, quantization_config=BitsAndBytesConfig(
  load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=...), dtype=...)``;
- ``prepare_model_for_kbit_training(model)`` (the QLoRA recipe: it casts the parameters that
  are not quantized, here the 262k-token embedding and the norms, to fp32 and turns gradient
  checkpointing on), unless the spec says ``"prepare_kbit": false``, in which case gradient
  checkpointing is turned on with ``model.gradient_checkpointing_enable()``;
- ``get_peft_model`` with the job's ``LoraConfig``; ``torch.optim.AdamW`` over the LoRA
  parameters;
- each micro-batch padded on the right, ``labels`` = the input ids with the prompt and padding
  positions set to -100, and the model's own loss (logits for every position over the full
  vocabulary, then cross-entropy); gradient accumulation over the micro-batches of a batch.

The spec (written by ``bench/train.py``) holds the already tokenized examples, so both sides
train on exactly the same token ids. One JSON line per event on stdout: ``loaded`` (seconds since
the process started, RSS), ``step`` (its seconds, loss, tokens), ``done`` (the kernel's peak RSS).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text("utf-8"))
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(int(spec["seed"]))
    dtype = getattr(torch, spec["compute_dtype"])
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
    )
    model = AutoModelForCausalLM.from_pretrained(
        spec["weights_dir"], quantization_config=quant, dtype=dtype
    )
    if spec["prepare_kbit"]:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec["gradient_checkpointing"]
        )
    elif spec["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = spec["lora"]
    config = LoraConfig(
        r=lora["rank"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec["learning_rate"])
    model.train()
    emit(
        "loaded",
        seconds=time.perf_counter() - STARTED,
        rss_mb=rss_mb(),
        trainable=sum(p.numel() for p in trainable),
    )

    examples: list[dict[str, list[int]]] = spec["examples"]
    batch, micro, pad = spec["batch_size"], spec["micro_batch_size"], spec["pad_token_id"]
    for step in range(spec["steps"]):
        rows = examples[step * batch : (step + 1) * batch]
        started = time.perf_counter()
        losses, tokens = [], 0
        for i in range(0, len(rows), micro):
            part = rows[i : i + micro]
            width = max(len(r["prompt"]) + len(r["target"]) for r in part)
            ids, mask, labels = [], [], []
            for r in part:
                seq = r["prompt"] + r["target"]
                fill = width - len(seq)
                ids.append(seq + [pad] * fill)
                mask.append([1] * len(seq) + [0] * fill)
                labels.append([-100] * len(r["prompt"]) + r["target"] + [-100] * fill)
                tokens += len(seq)
            out = model(
                input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                labels=torch.tensor(labels),
            )
            (out.loss * len(part) / len(rows)).backward()
            losses.append(float(out.loss.detach()))
            del out
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        emit(
            "step",
            step=step + 1,
            seconds=time.perf_counter() - started,
            loss=sum(losses) / len(losses),
            tokens=tokens,
            rss_mb=rss_mb(),
        )
    emit("done", peak_rss_mb=peak_rss_mb(), seconds=time.perf_counter() - STARTED)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: train_baseline.py SPEC.json")
    sys.exit(main(Path(sys.argv[1])))
