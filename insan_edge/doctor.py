"""``insan-edge doctor``'s checks: this machine against the memory budget and the config.

Each check returns a Finding: what it found, in words with the numbers, and what to change when
it is not fine. The budget (jetson/README.md) counts what the unit holds at its peak: the daemon
(Python, API, Presidio with spaCy), the served GGUF (mmap'd, counted whole), the topic model and
the trainer's cap, beside what the OS needs. The machine's facts are read from ``root`` (``/``,
or a recorded Jetson tree in tests) and from a Capabilities record, so tests can hand in a board.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

from insan_edge import jetson
from insan_edge.config.root import Config
from insan_edge.modelfiles import GGUF_MAGIC

Level = Literal["ok", "warn", "fail", "skip"]

# The budget's fixed parts (MB), measured on x86 or estimated; jetson/README.md says which.
OS_MB = 1200  # JetPack 6 without a desktop (multi-user.target); estimate
DAEMON_MB = 750  # Python, the API, Presidio + spaCy en_core_web_sm, llama.cpp's KV at 2048
TOPIC_MB = 200  # all-MiniLM-L6-v2 on onnxruntime
EMBEDDED_MB = 241  # the embedded Gemma 3 270M Q4_K_M (241.4 MiB) when no GGUF is configured
DISK_WARN_MB = 2048  # adapters, checkpoints and the dequantized training weights need room
DISK_FAIL_MB = 512
UNIT = Path("etc/systemd/system/insan-edge.service")
TRAINABLE = frozenset({"llama", "gemma3"})  # training/ggufio.py's KNOWN_ARCHITECTURES


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What this machine's builds can do; None where the library is not installed."""

    llama_offload: bool | None
    onnx_providers: tuple[str, ...] | None
    torch_cuda: bool | None


def detect_capabilities() -> Capabilities:
    offload = providers = cuda = None
    try:
        import llama_cpp

        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except ImportError:
        pass
    try:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    except ImportError:
        pass
    if importlib.util.find_spec("torch") is not None:
        import torch

        cuda = bool(torch.cuda.is_available())
    return Capabilities(offload, providers, cuda)


@dataclass
class Budget:
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def words(self) -> str:
        return " + ".join(f"{name} {mb:.0f} MB" for name, mb in self.parts.items())


def _model_mb(config: Config) -> float:
    path = config.system.model.path
    if path is None:
        return EMBEDDED_MB
    try:
        return path.expanduser().stat().st_size / 2**20
    except OSError:
        return 0.0  # the model check reports it


def budget(config: Config) -> Budget:
    s = config.system
    parts = {"daemon": float(DAEMON_MB), "served model": _model_mb(config)}
    if s.safety.topic_model:
        parts["topic model"] = TOPIC_MB
    if s.training.enabled:
        parts["trainer cap"] = s.training.max_training_memory_mb
    return Budget(parts)


def _memory(root: Path) -> jetson.Memory:
    board = jetson.memory(root) if root != Path("/") else None
    if board is not None:
        return board
    vm = psutil.virtual_memory()
    return jetson.Memory(vm.total / 2**20, vm.available / 2**20, None)


def check_budget(config: Config, root: Path) -> list[Finding]:
    mem, need = _memory(root), budget(config)
    usable = mem.total_mb - OS_MB
    head = f"{need.total:.0f} MB at the peak ({need.words()}) of {usable:.0f} MB"
    head += f" ({mem.total_mb:.0f} MB total less {OS_MB} MB for the OS)"
    cap = config.system.training.max_training_memory_mb
    out: list[Finding] = []
    if need.total <= usable:
        out.append(Finding("memory budget", "ok", head))
    else:
        over = need.total - usable
        fix = f"lower system.training.max_training_memory_mb to {max(int(cap - over), 256)}"
        fix += " or serve a smaller GGUF (system.model.path)"
        out.append(Finding("memory budget", "fail", head, fix))
    gov = config.system.governor
    start = cap + gov.memory_reserve_mb
    now = f"{mem.available_mb:.0f} MB available now; a run needs {start} MB to start"
    now += f" (trainer cap {cap} + reserve {gov.memory_reserve_mb})"
    if mem.gpu_mb is not None:
        now += f"; {mem.gpu_mb:.0f} MB of the shared RAM is held by the GPU (NvMapMemUsed)"
    if not config.system.training.enabled:
        out.append(Finding("free memory", "ok", now.split(";")[0] + "; training is off"))
    elif mem.available_mb >= start:
        out.append(Finding("free memory", "ok", now))
    else:
        fix = "training waits until that much is free: stop other programs"
        fix += " (a desktop: sudo systemctl set-default multi-user.target) or lower the cap"
        out.append(Finding("free memory", "warn", now, fix))
    return out


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(config: Config) -> Finding:
    state = config.system.paths.state_dir
    where = _existing(state)
    free = shutil.disk_usage(where).free / 2**20
    msg = f"{free:.0f} MB free for the state dir {state}" + (
        "" if where == state else f" (on {where}; the directory does not exist yet)"
    )
    if free < DISK_FAIL_MB:
        return Finding("disk", "fail", msg, f"free at least {DISK_WARN_MB} MB on {where}")
    if free < DISK_WARN_MB:
        return Finding("disk", "warn", msg, f"free at least {DISK_WARN_MB} MB on {where}")
    return Finding("disk", "ok", msg)


def check_socket_dir(config: Config) -> Finding:
    folder = config.system.paths.socket.parent
    if not folder.exists():
        if folder == Path("/run/insan-edge"):
            return Finding("socket dir", "ok", f"{folder} is made by systemd at start")
        return Finding("socket dir", "warn", f"{folder} does not exist", f"mkdir -m 0750 {folder}")
    mode = stat.S_IMODE(folder.stat().st_mode)
    msg = f"{folder} is mode {mode:04o}"
    if mode & stat.S_IWOTH:
        return Finding(
            "socket dir", "fail", msg + ": anyone may write there", f"chmod o-w {folder}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        fix = "run doctor as the service user (sudo -u insan-edge insan-edge doctor ...)"
        return Finding("socket dir", "warn", msg + ": this user cannot create the socket", fix)
    return Finding("socket dir", "ok", msg + ", writable by this user")


def check_model(config: Config) -> Finding:
    path = config.system.model.path
    if path is None:
        return Finding("model file", "ok", "the embedded Gemma 3 270M (written at first start)")
    path = path.expanduser()
    fix = "copy the GGUF there (jetson/README.md: models for the box) or fix system.model.path"
    if not path.is_file():
        return Finding("model file", "fail", f"{path} does not exist", fix)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        chown = f"chgrp insan-edge {path} && chmod g+r {path}"
        return Finding("model file", "fail", f"{path} cannot be read ({exc.strerror})", chown)
    if magic != GGUF_MAGIC:
        return Finding("model file", "fail", f"{path} is not a GGUF file", fix)
    msg = f"{path}: GGUF, {path.stat().st_size / 2**20:.0f} MB"
    arch = _architecture(path)
    if config.system.training.enabled and arch is not None and arch not in TRAINABLE:
        why = f"{msg}, architecture {arch}: served, but the trainer knows only {', '.join(sorted(TRAINABLE))}"
        return Finding(
            "model file",
            "warn",
            why,
            "serve a Llama or Gemma 3 GGUF to train adapters, or set system.training.enabled: false",
        )
    return Finding("model file", "ok", msg + (f", architecture {arch}" if arch else ""))


def _architecture(path: Path) -> str | None:
    """general.architecture from the GGUF's header (the trainer's reader, metadata only)."""
    try:
        from insan_edge.training.ggufio import read_gguf

        return read_gguf(path).architecture
    except Exception:
        return None


def check_gpu(config: Config, caps: Capabilities, on_jetson: bool) -> list[Finding]:
    out: list[Finding] = []
    install = "run jetson/install.sh (the CUDA builds)" if on_jetson else None
    layers = config.system.model.n_gpu_layers
    if caps.llama_offload and layers == 0 and on_jetson:
        msg = "llama.cpp can offload, but n_gpu_layers is 0: serving stays on the CPU"
        fix = "set system.model.n_gpu_layers: auto (the jetson preset's value)"
        out.append(Finding("serving GPU", "warn", msg, fix))
    elif caps.llama_offload:
        out.append(Finding("serving GPU", "ok", f"llama.cpp can offload (n_gpu_layers {layers})"))
    else:
        wanted = layers not in (0, "auto") or on_jetson  # auto on a PC: the CPU is expected
        msg = f"llama.cpp is a CPU-only build; serving runs on the CPU (n_gpu_layers {layers})"
        out.append(Finding("serving GPU", "warn" if wanted else "ok", msg, install))
    providers = caps.onnx_providers or ()
    cuda = "CUDAExecutionProvider" in providers
    topics = f"onnxruntime providers: {', '.join(providers) or 'none'}"
    want = config.system.safety.topic_device != "cpu" and (
        on_jetson or config.system.safety.topic_device == "cuda"
    )
    out.append(
        Finding(
            "topic model GPU",
            "warn" if want and not cuda else "ok",
            topics,
            None if cuda else install,
        )
    )
    if caps.torch_cuda is None:
        out.append(Finding("training GPU", "skip", "torch is not installed (the train extra)"))
    else:
        msg = "torch has CUDA" if caps.torch_cuda else "torch has no CUDA; training runs on the CPU"
        level: Level = "warn" if on_jetson and not caps.torch_cuda else "ok"
        out.append(Finding("training GPU", level, msg, None if caps.torch_cuda else install))
    return out


def check_board(config: Config, root: Path) -> list[Finding]:
    if not jetson.is_jetson(root):
        return [Finding("jetson", "skip", "not a Jetson (no nvidia,tegra device tree)")]
    gov = config.system.governor
    out = [Finding("jetson", "ok", jetson.board_model(root) or "an NVIDIA Tegra board")]
    mode = jetson.power_mode(root)
    if mode is None:
        out.append(
            Finding("power mode", "warn", "nvpmodel's mode cannot be read", "sudo nvpmodel -q")
        )
    elif mode.watts is not None and gov.min_power_watts and mode.watts < gov.min_power_watts:
        better = _better_mode(root, gov.min_power_watts)
        fix = f"sudo nvpmodel -m {better.id} ({better.label})" if better else "sudo nvpmodel -m 0"
        msg = f"{mode.label}: under {gov.min_power_watts:g} W, training is postponed"
        out.append(Finding("power mode", "warn", msg, fix))
    else:
        out.append(
            Finding(
                "power mode",
                "ok",
                mode.label + (" (the conf's default)" if mode.from_default else ""),
            )
        )
    hot = jetson.hottest_zone(root)
    if hot is None or hot.celsius is None:
        out.append(Finding("temperature", "warn", "no thermal zone gives a reading"))
    else:
        stops = hot.celsius >= gov.stop_temperature_c
        rule = (
            f"stops at {gov.stop_temperature_c:g}"
            if stops
            else f"pauses at {gov.pause_temperature_c:g}"
        )
        msg = f"hottest {hot.name} at {hot.celsius:.1f} °C (training {rule})"
        level: Level = "warn" if hot.celsius >= gov.pause_temperature_c else "ok"
        cool = "check the fan and the airflow around the box" if level == "warn" else None
        out.append(Finding("temperature", level, msg, cool))
    return out


def _better_mode(root: Path, floor: float) -> jetson.PowerMode | None:
    fitting = [m for m in jetson.power_modes(root) if m.watts is not None and m.watts >= floor]
    return min(fitting, key=lambda m: m.watts or 0.0, default=None)


_SIZE = re.compile(r"^\s*(Memory(?:Max|High))\s*=\s*(\S+)\s*$", re.M)
_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}


def unit_limits(text: str) -> dict[str, float]:
    """MemoryMax/MemoryHigh of a unit file in MB (the last assignment wins, as in systemd)."""
    out: dict[str, float] = {}
    for key, value in _SIZE.findall(text):
        number, suffix = (value[:-1], value[-1].upper()) if value[-1].isalpha() else (value, "")
        try:
            out[key] = float(number) * (_UNITS[suffix] if suffix else 1 / 2**20)
        except (ValueError, KeyError):
            continue  # infinity or a percentage: no cap to compare
    return out


def check_unit(config: Config, root: Path, unit: Path | None) -> Finding:
    path = unit or root / UNIT
    text = jetson.read_text(path, limit=1 << 20)
    if text is None:
        return Finding("systemd unit", "skip", f"{path} is not installed")
    caps, need = unit_limits(text), budget(config)
    top = caps.get("MemoryMax")
    if top is None:
        return Finding("systemd unit", "warn", f"{path} sets no MemoryMax", "see systemd/")
    msg = f"MemoryMax {top:.0f} MB against {need.total:.0f} MB for the unit ({need.words()})"
    if top < need.total:
        fix = f"raise MemoryMax to {int(need.total) + 256}M (systemctl edit insan-edge)"
        return Finding(
            "systemd unit",
            "fail",
            msg + ": the trainer would be OOM-killed",
            fix + " or lower the trainer cap",
        )
    usable = _memory(root).total_mb - OS_MB
    if top > usable:
        fix = f"lower MemoryMax to {int(usable)}M: past it the OS itself runs short"
        return Finding("systemd unit", "warn", msg + f", above the {usable:.0f} MB usable", fix)
    return Finding("systemd unit", "ok", msg)


def check_slice(config: Config, root: Path, unit: Path | None) -> Finding:
    """insan-edge.slice (beside the unit) must leave the unit its own caps: its MemoryMax above."""
    path = (unit or root / UNIT).with_name("insan-edge.slice")
    text = jetson.read_text(path, limit=1 << 20)
    if text is None:
        return Finding("systemd slice", "skip", f"{path} is not installed")
    outer = unit_limits(text).get("MemoryMax")
    inner = unit_limits(jetson.read_text(unit or root / UNIT, limit=1 << 20) or "").get("MemoryMax")
    if outer is None:
        return Finding(
            "systemd slice", "warn", f"{path} sets no MemoryMax", "see systemd/insan-edge.slice"
        )
    msg = f"MemoryMax {outer:.0f} MB for the product"
    if inner is not None and outer < inner:
        fix = f"raise the slice's MemoryMax to at least {inner:.0f}M (systemctl edit insan-edge.slice)"
        return Finding("systemd slice", "warn", msg + f", below the unit's {inner:.0f} MB", fix)
    return Finding(
        "systemd slice", "ok", msg + (f", above the unit's {inner:.0f} MB" if inner else "")
    )


def run_checks(
    config: Config,
    *,
    root: Path = Path("/"),
    unit: Path | None = None,
    capabilities: Callable[[], Capabilities] = detect_capabilities,
) -> list[Finding]:
    on_jetson = jetson.is_jetson(root)
    return [
        *check_budget(config, root),
        check_disk(config),
        check_socket_dir(config),
        check_model(config),
        *check_gpu(config, capabilities(), on_jetson),
        *check_board(config, root),
        check_unit(config, root, unit),
        check_slice(config, root, unit),
    ]
