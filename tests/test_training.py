"""The real trainer worker on a tiny model: QLoRA, the GGUF adapter in llama.cpp, stop and resume.

The tiny llama model is built here (random weights, a wide output layer so an adapter can make
a token confident). The worker runs as the daemon runs it: its own process, under the cap.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tinymodel import TRAINABLE_CONFIG, build_tiny_gguf
from trainjob import TARGET, events, start_worker, write_job

from insan_edge import llamacpp
from insan_edge.config.system import ModelSettings
from insan_edge.engine import Engine
from insan_edge.errors import ModelError
from insan_edge.training.protocol import (
    EXIT_BAD_JOB,
    EXIT_OUT_OF_MEMORY,
    EXIT_STOPPED,
    died_of_memory,
    exit_description,
)

PROMPT = "the family movie 2: "


@dataclass(frozen=True)
class Trained:
    base_f32: Path  # what the trainer learns from
    base_q8: Path  # what llama.cpp serves: the same model quantized to Q8_0
    weights: Path  # the prepared training weights, shared by every job here
    out: Path  # the uninterrupted run's out/ (peft/, adapter.gguf, eval.json, result.json)


def _quantize(src: Path, dst: Path) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed with {rc}"
    return dst


def _run(job_dir: Path, timeout: float = 300) -> tuple[int, list[dict[str, object]], str]:
    proc = start_worker(job_dir)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, events(out), err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    base = build_tiny_gguf(root / "tiny.gguf", seed=1, config=TRAINABLE_CONFIG)
    q8 = _quantize(base, root / "tiny-q8.gguf")
    weights = root / "weights"
    job = write_job(root / "job", base, weights)
    code, evs, err = _run(job)
    assert code == 0, err[-3000:]
    kinds = [e["event"] for e in evs]
    assert kinds[0] == "prepare" and "start" in kinds and kinds[-1] == "done"
    return Trained(base, q8, weights, job / "out")


# --- the adapter in llama.cpp --------------------------------------------------------------


def _llama_greedy(llm: object, ids: list[int], n: int) -> list[int]:
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(ids)  # type: ignore[attr-defined]
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))  # type: ignore[attr-defined]
        out.append(token)
        llm.eval([token])  # type: ignore[attr-defined]
    return out


def _torch_greedy(model: object, ids: list[int], n: int) -> list[int]:
    import torch

    x = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(x).logits[0, -1].argmax())  # type: ignore[operator]
            out.append(token)
            x = torch.cat([x, torch.tensor([[token]])], dim=1)
    return out


def test_llama_cpp_with_the_gguf_adapter_decodes_as_peft_does(trained: Trained) -> None:
    """llama.cpp (Q8_0 base + our GGUF LoRA) and PEFT (the base + the PEFT adapter) agree."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    llama_cpp = llamacpp.load()  # as the engine loads it (no AMX buffers: see that module)
    llm = llama_cpp.Llama(
        model_path=str(trained.base_q8), n_ctx=256, logits_all=True, verbose=False, n_threads=1
    )
    try:
        ids = llm.tokenize(PROMPT.encode(), add_bos=True)
        n = 12  # the target (6 tokens) and what the adapter makes follow it
        base_llama = _llama_greedy(llm, ids, n)
        handle = llama_cpp.llama_adapter_lora_init(
            llm.model, str(trained.out / "adapter.gguf").encode()
        )
        assert handle, "llama.cpp refused the GGUF adapter"
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(1.0)
        assert llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, scales) == 0
        tuned_llama = _llama_greedy(llm, ids, n)
        text = llm.detokenize(tuned_llama).decode("utf-8", "replace")
    finally:
        llm.close()

    # PEFT on the same model in float32 (transformers reads the GGUF), with the PEFT adapter.
    base = AutoModelForCausalLM.from_pretrained(
        str(trained.base_f32.parent), gguf_file=trained.base_f32.name, dtype=torch.float32
    )
    base_torch = _torch_greedy(base, ids, n)
    with warnings.catch_warnings():
        # peft asks transformers' deprecated `is_gradient_checkpointing` (FutureWarning, v6).
        warnings.simplefilter("ignore", FutureWarning)
        tuned = PeftModel.from_pretrained(base, str(trained.out / "peft"))
    tuned_torch = _torch_greedy(tuned, ids, n)

    assert base_llama == base_torch  # the same model on both sides
    assert tuned_llama == tuned_torch  # the converted adapter moves llama.cpp as PEFT's moves torch
    assert tuned_llama != base_llama
    assert text.startswith(TARGET), text


def test_the_engine_applies_adapters_per_request_without_reloading(trained: Trained) -> None:
    engine = Engine(trained.base_q8, ModelSettings(context_length=512, threads=1, temperature=0))
    try:
        grammar = engine.grammar('root ::= [a-z ]+ "."')
        adapter = engine.load_adapter("testfam/v1", trained.out / "adapter.gguf")
        assert engine.load_adapter("testfam/v1", trained.out / "adapter.gguf") == adapter

        def answer(use: bool) -> str:
            return engine.generate(
                PROMPT, grammar, 8, seed=0, adapter=adapter if use else None
            ).text

        plain, tuned = answer(False), answer(True)
        assert tuned.startswith(TARGET) and not plain.startswith(TARGET)
        # Alternating never serves one adapter's cached state to the other.
        for _ in range(2):
            assert answer(True) == tuned
            assert answer(False) == plain

        with pytest.raises(ModelError, match="already loaded"):
            engine.load_adapter("testfam/v1", trained.base_q8)
        with pytest.raises(ModelError, match="refused"):
            engine.load_adapter("bad", trained.base_q8)  # a model, not a LoRA
        engine.unload_adapter("testfam/v1")
        with pytest.raises(ModelError, match="not loaded"):
            engine.generate(PROMPT, grammar, 8, adapter=adapter)
        assert answer(False) == plain
    finally:
        engine.close()


def test_evaluation_scores_the_candidate_against_the_base(trained: Trained) -> None:
    scores = json.loads((trained.out / "eval.json").read_text())
    result = json.loads((trained.out / "result.json").read_text())
    assert scores["candidate"]["preference_accuracy"] == 1.0
    assert scores["candidate"]["heldout_loss"] < scores["base"]["heldout_loss"]
    assert scores.get("current") is None
    assert result["status"] == "done" and result["peak_rss_mb"] < 1536


def test_the_current_adapter_scores_as_it_did_when_it_was_the_candidate(
    trained: Trained, tmp_path: Path
) -> None:
    """An update is judged against the serving adapter on the same held-out lines: loaded into
    the trainer beside the new one, it must score exactly as it did in its own run (bitsandbytes
    repacks 4-bit weights at their first use on the CPU; an adapter loaded after that once
    turned every score of the base into noise)."""
    job = write_job(tmp_path / "update", trained.base_f32, trained.weights, epochs=1,
                    current_adapter=trained.out / "peft")  # fmt: skip
    code, _, err = _run(job)
    assert code == 0, err[-2000:]
    first = json.loads((trained.out / "eval.json").read_text())
    update = json.loads((job / "out" / "eval.json").read_text())
    assert "current_error" not in update
    for key in ("preference_accuracy", "heldout_loss"):
        assert update["current"][key] == pytest.approx(first["candidate"][key], rel=1e-3)
        assert update["base"][key] == pytest.approx(first["base"][key], rel=1e-3)


# --- stopping and resuming -----------------------------------------------------------------


@pytest.fixture
def long_job(trained: Trained, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two copies of one longer job (9 epochs, 27 steps): one to interrupt, one to run through."""
    jobs = tuple(
        write_job(tmp_path / name, trained.base_f32, trained.weights, epochs=9)
        for name in ("interrupted", "straight")
    )
    yield jobs  # type: ignore[misc]
    for job in jobs:
        shutil.rmtree(job, ignore_errors=True)


def _tensors(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(out / "peft" / "adapter_model.safetensors")))


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_adapter(
    long_job: tuple[Path, Path],
) -> None:
    interrupted, straight = long_job
    code, _, err = _run(straight)
    assert code == 0, err[-2000:]

    stops = []
    for _attempt in range(10):
        proc = start_worker(interrupted)
        assert proc.stdout is not None
        seen: list[dict[str, object]] = []
        for line in proc.stdout:
            event = json.loads(line)
            seen.append(event)
            if event["event"] == "progress" and int(str(event["step"])) % 5 == 2:
                # A pause first (the daemon's SIGSTOP), then checkpoint-and-stop.
                proc.send_signal(signal.SIGSTOP)
                time.sleep(0.2)
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGUSR1)
                break
        rest, err = proc.communicate(timeout=120)
        seen += events(rest)
        if proc.returncode == 0:
            break
        assert proc.returncode == EXIT_STOPPED, err[-2000:]
        stops.append(seen[-1])
        assert seen[-1]["event"] == "stopped" and seen[-1]["reason"] == "signal"
        assert (interrupted / "checkpoint").is_dir()
    assert proc.returncode == 0 and len(stops) >= 2, stops
    starts = [e for e in seen if e["event"] == "start"]
    assert starts and int(str(starts[0]["resumed_from_step"])) > 0

    # Bit for bit the adapter an uninterrupted run trains, and the same held-out scores.
    a, b = _tensors(interrupted / "out"), _tensors(straight / "out")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    evals = [json.loads((j / "out" / "eval.json").read_text()) for j in long_job]
    assert evals[0] == evals[1]
    assert not (interrupted / "checkpoint").exists()  # a finished run leaves no checkpoint


def test_a_checkpoint_of_another_job_is_not_resumed(trained: Trained, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job", trained.base_f32, trained.weights, epochs=9)
    proc = start_worker(job)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "checkpoint":
            proc.send_signal(signal.SIGUSR1)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED
    spec = json.loads((job / "job.json").read_text())
    spec["train"]["learning_rate"] = 0.02  # what is learned changes: start over
    (job / "job.json").write_text(json.dumps(spec))
    code, evs, err = _run(job)
    assert code == 0, err[-2000:]
    start = next(e for e in evs if e["event"] == "start")
    assert start["resumed_from_step"] == 0


# --- bad jobs and the memory cap -----------------------------------------------------------


def test_a_bad_job_is_named_not_crashed_on(trained: Trained, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job", trained.base_f32, trained.weights)
    spec = json.loads((job / "job.json").read_text())
    spec["train"]["epochs"] = "two"
    (job / "job.json").write_text(json.dumps(spec))
    code, evs, _ = _run(job)
    assert code == EXIT_BAD_JOB
    assert evs[-1]["reason"] == "bad_job" and "'epochs'" in str(evs[-1]["message"])

    job = write_job(tmp_path / "job2", trained.base_f32, trained.weights)
    (job / "dataset.jsonl").write_text('{"id": "x", "split": "train"}\nnot json\n')
    code, evs, _ = _run(job)
    assert code == EXIT_BAD_JOB and "line 1" in str(evs[-1]["message"])


def test_the_memory_cap_ends_the_worker_with_out_of_memory(
    trained: Trained, tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job", trained.base_f32, trained.weights, memory_mb=300)
    proc = start_worker(job, memory_mb=300)
    out, err = proc.communicate(timeout=120)
    # Python code refused memory reports it and exits 76; a native allocation refused at the
    # cap may instead abort the process. The daemon treats both as out of memory.
    assert died_of_memory(proc.returncode), (exit_description(proc.returncode), err[-2000:])
    if proc.returncode == EXIT_OUT_OF_MEMORY:
        assert events(out)[-1]["reason"] == "out_of_memory"
    else:
        assert proc.returncode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS), err[-2000:]
    assert not (job / "out").exists()


def test_what_counts_as_dying_of_memory() -> None:
    for code in (EXIT_OUT_OF_MEMORY, -signal.SIGKILL, -signal.SIGABRT, -signal.SIGSEGV):
        assert died_of_memory(code), code
    for code in (0, 1, 65, 75, -signal.SIGTERM, -signal.SIGINT, -signal.SIGUSR1):
        assert not died_of_memory(code), code
    assert exit_description(-signal.SIGABRT) == "killed by SIGABRT"
    assert exit_description(76) == "exit 76"


def test_memory_cap_is_applied_in_the_child_only() -> None:
    import resource

    from insan_edge.training.limits import OOM_SCORE_ADJ, apply_memory_cap

    before = resource.getrlimit(resource.RLIMIT_DATA)
    probe = subprocess.run(
        [
            "python3",
            "-c",
            "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)[0]); "
            "print(open('/proc/self/oom_score_adj').read())",
        ],
        preexec_fn=lambda: apply_memory_cap(512),
        capture_output=True,
        text=True,
        check=True,
    )
    limit, adj = probe.stdout.split()
    assert int(limit) == 512 * 1024 * 1024
    assert int(adj) == OOM_SCORE_ADJ  # the kernel kills the trainer before the daemon
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    with pytest.raises(ValueError):
        apply_memory_cap(0)


def test_a_stop_sent_while_the_worker_starts_is_a_clean_stop(
    trained: Trained, tmp_path: Path
) -> None:
    """The daemon may stop a trainer it has just started: it must not die of the signal."""
    job = write_job(tmp_path / "job", trained.base_f32, trained.weights)
    proc = start_worker(job)
    proc.send_signal(signal.SIGUSR1)  # before Python has even started, most likely
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED, (proc.returncode, err[-2000:])
    assert events(out)[-1] == {"event": "stopped", "reason": "signal", "step": 0}


def test_a_failure_at_the_cap_counts_as_out_of_memory_whatever_the_exception() -> None:
    """Not every refused allocation is a MemoryError (an extension's import can fail with a
    bare SystemError): the worker also asks whether it stands at its cap."""
    from insan_edge.training.limits import trainer_env, trainer_preexec

    code = (
        "from insan_edge.training.worker import at_memory_cap\n"
        "print(at_memory_cap())\n"
        "try:\n    import torch, transformers, peft\n"
        "except MemoryError:\n    print(at_memory_cap())\n"
    )
    capped = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lambda: trainer_preexec(300),
        env=trainer_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert capped.stdout.split() == ["False", "True"], capped.stderr[-2000:]
