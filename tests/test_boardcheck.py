"""jetson/install.sh and its checks (insan_edge/boardcheck.py), run here in the dry mode against
recorded outputs (tests/data/jetson/install/README.md says where each comes from), and the
probes run for real on this machine, where every build is the CPU one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from insan_edge import boardcheck as bc

REPO = Path(__file__).parent.parent
INSTALL = REPO / "jetson" / "install.sh"
DATA = Path(__file__).parent / "data" / "jetson" / "install"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed on this machine")


def recorded(kind: str, probe: str) -> str:
    return (DATA / kind / f"{probe}.txt").read_text()


def test_a_board_with_every_cuda_build() -> None:
    results = bc.checks(sys.executable, None, DATA / "jp6-cuda", DATA)
    assert [(c.name, c.ok) for c in results] == [
        ("torch", True),
        ("bitsandbytes", True),
        ("llama-cpp-python", True),
        ("onnxruntime-gpu", True),
    ]
    assert results[2].summary == "0.3.36: 19/19 layers on Orin sm 8.7, 58.3 tokens/s"
    assert results[0].summary == "torch 2.5.0a0+872d972e41.nv24.08 on CUDA 12.6 (Orin, sm 8.7)"


def test_a_board_with_pypis_builds_says_what_to_fix() -> None:
    results = {c.name: c for c in bc.checks(sys.executable, None, DATA / "jp6-pypi-builds", DATA)}
    assert not any(c.ok for c in results.values())
    assert results["torch"].summary == "torch 2.13.0+cpu sees no GPU (a CPU-only build)"
    assert results["bitsandbytes"].summary == (
        "0.46.1: nf4 on CUDA failed: RuntimeError: Error named symbol not found at line 233 in"
        " file /src/csrc/ops.cu"
    )
    assert results["llama-cpp-python"].summary == "0.3.36 is a CPU-only build"
    assert "has no CUDA provider" in results["onnxruntime-gpu"].summary
    assert all(c.fix and "jetson/install.sh" in c.fix for c in results.values())


def test_partial_offload_and_broken_outputs_fail() -> None:
    good = recorded("jp6-cuda", "llama")
    partial = bc.parse_llama(good.replace("offloaded 19/19", "offloaded 12/19"))
    assert (partial.ok, partial.summary) == (False, "12/19 layers offloaded to the GPU")
    no_device = bc.parse_llama("\n".join(x for x in good.splitlines() if "Device 0" not in x))
    assert not no_device.ok and "no ggml_cuda_init line" in no_device.summary
    old_format = good.replace(" (Total VRAM: 7619 MiB)", "").replace(", VRAM: 7619 MiB", "")
    assert bc.parse_llama(old_format).ok  # llama.cpp before the VRAM field
    broken = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n"
    assert bc.parse_torch(broken).summary == (
        "torch does not import: ModuleNotFoundError: No module named 'torch'"
    )
    assert not bc.parse_torch(recorded("jp6-cuda", "torch").replace("2048.0", "0.0")).ok
    no_session = recorded("jp6-cuda", "onnxruntime").replace(
        "session_device cuda", "session_device cpu"
    )
    assert bc.parse_onnxruntime(no_session).summary == "the topic model's CUDA session failed (cpu)"


def test_outputs_captured_on_this_x86_machine_read_as_cpu_builds() -> None:
    assert bc.parse_torch(recorded("x86-captured", "torch")).summary.endswith("(a CPU-only build)")
    assert bc.parse_llama(recorded("x86-captured", "llama")).summary == "0.3.36 is a CPU-only build"
    onnx = bc.parse_onnxruntime(recorded("x86-captured", "onnxruntime"))
    assert not onnx.ok and "AzureExecutionProvider, CPUExecutionProvider" in onnx.summary


def test_the_torch_probe_runs_here() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = bc.parse_torch(bc.run_probe(sys.executable, "torch", []))
    assert (result.ok, result.summary) == (
        False,
        f"torch {torch.__version__} sees no GPU (a CPU-only build)",
    )


def test_board_refusals() -> None:
    assert bc.parse_board(None, None).summary.startswith("not a Jetson")
    jp5 = bc.board(Path("/"), DATA / "jp5-agx")
    assert (jp5.ok, jp5.summary) == (
        False,
        "Jetson AGX Orin runs L4T R35.2.1: this install is for JetPack 6 (L4T R36)",
    )
    assert bc.main(["--fixtures", str(DATA / "jp5-agx")]) == 3


def install(*args: str) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, str(INSTALL), *args], capture_output=True, text=True, timeout=120, check=False
    )


@needs_bash
def test_install_dry_run_on_a_ready_board_installs_nothing() -> None:
    done = install("--dry-run", "--fixtures", str(DATA / "jp6-cuda"))
    assert done.returncode == 0, done.stderr
    assert "==> Every CUDA build is in place: nothing to install" in done.stdout
    assert "$ " not in done.stdout  # no command would run: a second run changes nothing
    assert "all checks passed" in done.stdout


@needs_bash
def test_install_dry_run_on_pypi_builds_plans_every_step() -> None:
    done = install("--dry-run", "--fixtures", str(DATA / "jp6-pypi-builds"))
    assert done.returncode == 1
    commands = [
        line.strip()[2:] for line in done.stdout.splitlines() if line.strip().startswith("$ ")
    ]
    assert commands[0].endswith(
        "--index-url https://pypi.jetson-ai-lab.io/jp6/cu126 --force-reinstall --no-deps torch"
    )
    assert any("cmake -DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY=87" in c for c in commands)
    llama = next(c for c in commands if "llama-cpp-python==0.3.36" in c)
    assert "CMAKE_ARGS=-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87" in llama
    assert "--no-cache-dir --force-reinstall --no-deps --no-binary llama-cpp-python" in llama
    assert any(c.endswith("pip uninstall -y onnxruntime") for c in commands)
    assert "4 of 5 checks failed" in done.stdout
    assert "bnb.XXXXXX" in done.stdout


@needs_bash
def test_install_refuses_off_jetpack_6() -> None:
    here = install()  # this machine: no Jetson
    assert here.returncode == 3
    assert "refusing: not a Jetson" in here.stderr and "scripts/install.sh" in here.stderr
    jp5 = install("--dry-run", "--fixtures", str(DATA / "jp5-agx"))
    assert jp5.returncode == 3 and "this install is for JetPack 6 (L4T R36)" in jp5.stderr
    assert install("--fixtures", str(DATA / "jp6-cuda")).returncode == 1  # only with --dry-run
