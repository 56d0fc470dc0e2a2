"""The Jetson install's checks: is this JetPack 6, and do the CUDA builds really use the GPU?

Each check runs a small probe in the venv's Python (``python -c ...``) and reads what it prints,
together with what the library itself logs (llama.cpp's ``ggml_cuda_init`` and ``load_tensors``
lines). ``--fixtures DIR`` reads recorded outputs (DIR/<probe>.txt, DIR/nv_tegra_release,
DIR/device-tree-model) instead of running anything: the same parsers, so the dry run checks the
checks. jetson/install.sh calls this module; it also runs alone:

    python -m insan_edge.boardcheck [--python VENV/bin/python] [--model GGUF] [--fixtures DIR]
    python -m insan_edge.boardcheck --board-only     # refuse (exit 3) unless JetPack 6
    python -m insan_edge.boardcheck --needed         # the install steps still to do, one a line

Exit status: 0 every check passed, 1 a check failed, 3 not a Jetson on JetPack 6.
Stdlib only: the board check runs before the venv exists.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from insan_edge import jetson

TEGRA_RELEASE = "etc/nv_tegra_release"
_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


@dataclass(frozen=True)
class Check:
    name: str  # also the install step that fixes it
    ok: bool
    summary: str
    fix: str | None = None


# --- the probes: what runs in the venv ---------------------------------------------------------

TORCH = """\
import torch
print("torch", torch.__version__)
print("cuda_build", torch.version.cuda)
print("available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
    print("capability", "%d.%d" % torch.cuda.get_device_capability(0))
    print("tensor_sum", float((torch.ones(1024, device="cuda") * 2).sum()))
"""
BITSANDBYTES = """\
import torch, bitsandbytes
from bitsandbytes.functional import dequantize_4bit, quantize_4bit
print("bitsandbytes", bitsandbytes.__version__)
x = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
q, state = quantize_4bit(x, quant_type="nf4")
print("nf4_max_error", float((x - dequantize_4bit(q, state)).abs().max()))
"""
LLAMA = """\
import sys, time, llama_cpp
print("llama_cpp", llama_cpp.__version__, flush=True)
print("offload", bool(llama_cpp.llama_supports_gpu_offload()), flush=True)
llm = llama_cpp.Llama(sys.argv[1], n_gpu_layers=-1, n_ctx=512, verbose=True)
t = time.perf_counter()
out = llm("The family", max_tokens=32, temperature=0)
n = out["usage"]["completion_tokens"]
print("tokens_per_s", round(n / (time.perf_counter() - t), 1), flush=True)
llm.close()
"""
ONNXRUNTIME = """\
import sys, onnxruntime
print("onnxruntime", onnxruntime.__version__)
print("providers", ",".join(onnxruntime.get_available_providers()))
from insan_edge.topic_model import Embedder, ensure_model, model_source
model = ensure_model(__import__("pathlib").Path(sys.argv[1]), source=model_source())
print("session_device", Embedder(model.parent, device="cuda").device)
"""


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if re.fullmatch(r"[a-z_0-9]+", key) and key not in out:
            out[key] = value.strip()
    return out


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return (errors or lines or ["no output"])[-1][:240]


# --- the parsers: recorded or live output -> a Check ------------------------------------------

INSTALL = "re-run jetson/install.sh"


def parse_torch(text: str) -> Check:
    f = _fields(text)
    if "torch" not in f:
        return Check("torch", False, f"torch does not import: {_last_error(text)}", INSTALL)
    if f.get("available") != "True":
        build = f.get("cuda_build")
        why = "a CPU-only build" if build in (None, "None") else f"built for CUDA {build}"
        fix = "install JetPack's torch wheel (jetson/install.sh, step torch)"
        return Check("torch", False, f"torch {f['torch']} sees no GPU ({why})", fix)
    if f.get("tensor_sum") != "2048.0":
        return Check("torch", False, f"a CUDA tensor failed: {_last_error(text)}", INSTALL)
    where = f"{f.get('device')}, sm {f.get('capability')}"
    return Check("torch", True, f"torch {f['torch']} on CUDA {f.get('cuda_build')} ({where})")


def parse_bitsandbytes(text: str) -> Check:
    f = _fields(text)
    if "bitsandbytes" not in f:
        return Check("bitsandbytes", False, f"does not import: {_last_error(text)}", INSTALL)
    try:
        error = float(f.get("nf4_max_error", "nan"))
    except ValueError:
        error = float("nan")
    if not error < 1.0:  # nan too
        why = _last_error(text)
        fix = "build it for sm_87 (jetson/install.sh, step bitsandbytes)"
        return Check("bitsandbytes", False, f"{f['bitsandbytes']}: nf4 on CUDA failed: {why}", fix)
    return Check(
        "bitsandbytes", True, f"{f['bitsandbytes']}: nf4 round trip on CUDA, max error {error:g}"
    )


_CUDA_DEVICE = re.compile(r"Device (\d+): ([^,]+), compute capability ([\d.]+)")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def parse_llama(text: str) -> Check:
    f = _fields(text)
    if "llama_cpp" not in f:
        return Check("llama-cpp-python", False, f"does not import: {_last_error(text)}", INSTALL)
    rebuild = "rebuild it with GGML_CUDA=on for sm_87 (jetson/install.sh, step llama-cpp-python)"
    if f.get("offload") != "True":
        return Check("llama-cpp-python", False, f"{f['llama_cpp']} is a CPU-only build", rebuild)
    device, layers = _CUDA_DEVICE.search(text), _OFFLOADED.search(text)
    if device is None:
        return Check(
            "llama-cpp-python",
            False,
            "llama.cpp found no CUDA device (no ggml_cuda_init line)",
            rebuild,
        )
    if layers is None or layers.group(1) != layers.group(2) or layers.group(1) == "0":
        got = f"{layers.group(1)}/{layers.group(2)}" if layers else "no"
        return Check("llama-cpp-python", False, f"{got} layers offloaded to the GPU", rebuild)
    speed = f", {f['tokens_per_s']} tokens/s" if "tokens_per_s" in f else ""
    where = f"{device.group(2)} sm {device.group(3)}"
    return Check(
        "llama-cpp-python",
        True,
        f"{f['llama_cpp']}: {layers.group(1)}/{layers.group(2)} layers on {where}{speed}",
    )


def parse_onnxruntime(text: str) -> Check:
    f = _fields(text)
    if "onnxruntime" not in f:
        return Check("onnxruntime-gpu", False, f"does not import: {_last_error(text)}", INSTALL)
    providers = f.get("providers", "").split(",")
    fix = "install onnxruntime-gpu for JetPack (jetson/install.sh, step onnxruntime-gpu)"
    if "CUDAExecutionProvider" not in providers:
        return Check(
            "onnxruntime-gpu",
            False,
            f"{f['onnxruntime']} has no CUDA provider ({', '.join(providers)})",
            fix,
        )
    if f.get("session_device") != "cuda":
        why = f.get("session_device") or _last_error(text)
        return Check(
            "onnxruntime-gpu", False, f"the topic model's CUDA session failed ({why})", fix
        )
    return Check(
        "onnxruntime-gpu",
        True,
        f"{f['onnxruntime']}: the topic model runs on CUDAExecutionProvider",
    )


def parse_board(release: str | None, model: str | None) -> Check:
    where = model or "no Jetson device-tree model"
    match = _RELEASE.search(release or "")
    if match is None:
        return Check("board", False, f"not a Jetson ({where}; no /{TEGRA_RELEASE})")
    major, revision = int(match.group(1)), match.group(2)
    if major != 36:
        return Check(
            "board",
            False,
            f"{where} runs L4T R{major}.{revision}: this install is for JetPack 6 (L4T R36)",
        )
    return Check("board", True, f"{where}, L4T R{major}.{revision} (JetPack 6)")


# --- running them -------------------------------------------------------------------------------

PROBES: dict[str, tuple[str, Callable[[str], Check]]] = {
    "torch": (TORCH, parse_torch),
    "bitsandbytes": (BITSANDBYTES, parse_bitsandbytes),
    "llama": (LLAMA, parse_llama),
    "onnxruntime": (ONNXRUNTIME, parse_onnxruntime),
}


def run_probe(python: str, name: str, args: list[str], timeout: float = 600) -> str:
    source, _ = PROBES[name]
    try:
        done = subprocess.run(
            [python, "-c", source, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ProbeError: {exc}"
    return done.stdout + done.stderr


def board(root: Path, fixtures: Path | None) -> Check:
    if fixtures is not None:
        return parse_board(
            jetson.read_text(fixtures / "nv_tegra_release"),
            jetson.read_text(fixtures / "device-tree-model"),
        )
    return parse_board(jetson.read_text(root / TEGRA_RELEASE), jetson.board_model(root))


def checks(python: str, model: Path | None, fixtures: Path | None, work: Path) -> list[Check]:
    out = []
    for name, (_, parse) in PROBES.items():
        if fixtures is not None:
            text = (
                jetson.read_text(fixtures / f"{name}.txt", limit=1 << 20)
                or "ProbeError: no recorded output"
            )
        elif name == "llama":
            text = (
                run_probe(python, name, [str(model)])
                if model
                else "ProbeError: no model to load (--model)"
            )
        else:
            text = run_probe(python, name, [str(work)] if name == "onnxruntime" else [])
        out.append(parse(text))
    return out


def report(results: list[Check]) -> str:
    lines = []
    for c in results:
        lines.append(f"  {'OK  ' if c.ok else 'FAIL'}  {c.name}: {c.summary}")
        if c.fix and not c.ok:
            lines.append(f"        fix: {c.fix}")
    failed = sum(not c.ok for c in results)
    lines.append("all checks passed" if not failed else f"{failed} of {len(results)} checks failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m insan_edge.boardcheck", description=__doc__.splitlines()[0]
    )
    p.add_argument("--python", default=sys.executable, help="the venv's interpreter to probe")
    p.add_argument("--model", type=Path, help="a GGUF to load with every layer on the GPU")
    p.add_argument("--fixtures", type=Path, help="read recorded outputs from DIR, run nothing")
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.add_argument("--board-only", action="store_true", help="only check for JetPack 6")
    p.add_argument("--needed", action="store_true", help="print the install steps still to do")
    args = p.parse_args(argv)
    found = board(args.root, args.fixtures)
    if not found.ok:
        print(f"refusing: {found.summary}. jetson/install.sh is only for a Jetson Orin on JetPack 6; "
              "elsewhere use scripts/install.sh (CPU builds).", file=sys.stderr)  # fmt: skip
        return 3
    if args.board_only:
        print(f"board: {found.summary}")
        return 0
    with tempfile.TemporaryDirectory(prefix="insan-boardcheck-") as work:
        results = checks(args.python, args.model, args.fixtures, Path(work))
    if args.needed:
        for c in results:
            if not c.ok:
                print(c.name)  # the name of the install step that fixes it
        return 0
    print(
        "insan-edge boardcheck"
        + (f" (recorded outputs from {args.fixtures})" if args.fixtures else f" ({args.python})")
    )
    print(report([found, *results]))
    return 0 if all(c.ok for c in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
