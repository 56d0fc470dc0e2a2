"""Readings only a Jetson has: thermal zones, GPU load, power mode, and tegrastats lines.

Every reader takes ``root`` (normally ``/``) so tests can point it at a copied tree. Nothing here
raises on a missing or unreadable file: a board lacks some of them, and that is an answer.
Formats follow what jetson-stats (rbonghi/jetson_stats) and NVIDIA's tools read; see
tests/data/jetson/README.md for the sources of each path and value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

THERMAL_DIR = "sys/devices/virtual/thermal"
# The iGPU's busy share in per-mille. JetPack 6 (L4T 36, upstream-style device tree) puts the
# ga10b under bus@0; JetPack 5 and older expose it as gpu.0 (tegrastats' IGPU_LOAD paths).
GPU_LOAD_FILES = (
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/platform/17000000.gpu/load",
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
)
# nvpmodel writes the active mode as "pmode:0002" (other fields may follow); the conf names each
# mode ("< POWER_MODEL ID=2 NAME=MAXN_SUPER >") and the boot default ("< PM_CONFIG DEFAULT=2 >").
NVPMODEL_STATUS = "var/lib/nvpmodel/status"
NVPMODEL_CONF = "etc/nvpmodel.conf"
DT_COMPATIBLE = "proc/device-tree/compatible"
DT_MODEL = "proc/device-tree/model"
# CPU and GPU share the Orin's RAM: CUDA allocations come from nvmap, show as used memory in
# MemAvailable, and are counted in NvMapMemUsed (NVIDIA's "CUDA for Tegra" memory notes).
MEMINFO = "proc/meminfo"

OFFLINE_MILLI_C = -256000  # what BPMP reports for a powered-down or fused-off sensor
VALID_C = (-40.0, 150.0)  # anything outside is a sensor fault or a placeholder, not a reading

_ZONE = re.compile(r"^thermal_zone(\d+)$")
_PMODE = re.compile(r"pmode:\s*(\d+)")
_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)")
_DEFAULT = re.compile(r"<\s*PM_CONFIG\s+DEFAULT\s*=\s*(\d+)")


def read_text(path: Path, limit: int = 65536) -> str | None:
    """A small sysfs/procfs file's text without NULs, or None when it cannot be read.

    Plain ``os.read``: reading an offline Orin Nano zone fails with EAGAIN, which ``os.read``
    raises as an OSError, where Python's file objects may return None and fail later.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.replace(b"\x00", b"\n").decode("utf-8", "replace").strip()


def board_model(root: Path) -> str | None:
    text = read_text(root / DT_MODEL)
    return text or None


def is_jetson(root: Path) -> bool:
    """True on an NVIDIA Tegra board (device tree compatible or model string)."""
    compatible = (read_text(root / DT_COMPATIBLE) or "").split()
    if any(entry.startswith("nvidia,tegra") for entry in compatible):
        return True
    return "jetson" in (board_model(root) or "").lower()


@dataclass(frozen=True)
class Zone:
    """One thermal zone; ``celsius`` is None when its reading was skipped (``skipped`` says why)."""

    index: int
    name: str
    celsius: float | None
    skipped: str | None = None


def _zone(index: int, folder: Path) -> Zone:
    name = read_text(folder / "type") or f"thermal_zone{index}"
    if name.upper().startswith("PMIC"):
        # PMIC-Die on Nano/TX boards is a fixed 100 °C placeholder, not a measurement.
        return Zone(index, name, None, "placeholder sensor")
    raw = read_text(folder / "temp")
    if raw is None:
        return Zone(index, name, None, "unreadable")  # e.g. EAGAIN on Orin Nano's cv0..cv2
    try:
        milli = int(raw.split()[0])
    except (ValueError, IndexError):
        return Zone(index, name, None, f"not a number ({raw!r})")
    if milli == OFFLINE_MILLI_C:
        return Zone(index, name, None, "offline (-256 °C)")
    celsius = milli / 1000.0
    if not VALID_C[0] <= celsius <= VALID_C[1]:
        return Zone(index, name, None, f"out of range ({celsius:g} °C)")
    return Zone(index, name, celsius)


def thermal_zones(root: Path) -> list[Zone]:
    """Every thermal zone in order, readable or not."""
    base = root / THERMAL_DIR
    try:
        names = os.listdir(base)
    except OSError:
        return []
    indexed = sorted((int(m.group(1)), name) for name in names if (m := _ZONE.match(name)))
    return [_zone(index, base / name) for index, name in indexed]


def hottest_zone(root: Path) -> Zone | None:
    """The hottest zone with a valid reading, or None when there is none."""
    valid = [z for z in thermal_zones(root) if z.celsius is not None]
    return max(valid, key=lambda z: z.celsius or 0.0) if valid else None


def gpu_load_percent(root: Path) -> float | None:
    """The iGPU's load (0-100) from the first GPU ``load`` file that reads as a number."""
    for relative in GPU_LOAD_FILES:
        raw = read_text(root / relative)
        if raw:
            try:
                return min(max(int(raw.split()[0]) / 10.0, 0.0), 100.0)
            except ValueError:
                continue
    return None


_WATTS = re.compile(r"(\d+(?:\.\d+)?)W(?![A-Za-z])")


@dataclass(frozen=True)
class PowerMode:
    id: int
    name: str | None  # None when nvpmodel.conf does not name the id
    from_default: bool = False  # no status file: the conf's PM_CONFIG DEFAULT applies

    @property
    def label(self) -> str:
        return f"{self.name} (mode {self.id})" if self.name else f"mode {self.id}"

    @property
    def watts(self) -> float | None:
        """The budget the mode's name gives ("7W", "MODE_15W"); None for MAXN or an unnamed mode."""
        match = _WATTS.search(self.name or "")
        return float(match.group(1)) if match else None


@dataclass(frozen=True)
class Memory:
    """/proc/meminfo in MB; ``gpu_mb`` is NvMapMemUsed (None off a Jetson or on old kernels)."""

    total_mb: float
    available_mb: float
    gpu_mb: float | None


def memory(root: Path) -> Memory | None:
    """The board's memory from ``root``/proc/meminfo, or None when it cannot be read."""
    fields: dict[str, float] = {}
    for line in (read_text(root / MEMINFO) or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) / 1024  # kB
    if "MemTotal" not in fields or "MemAvailable" not in fields:
        return None
    return Memory(fields["MemTotal"], fields["MemAvailable"], fields.get("NvMapMemUsed"))


def power_modes(root: Path) -> list[PowerMode]:
    """Every mode nvpmodel.conf names, in its order."""
    conf = read_text(root / NVPMODEL_CONF) or ""
    return [PowerMode(int(i), name) for i, name in _MODEL.findall(conf)]


def power_mode(root: Path) -> PowerMode | None:
    """The active nvpmodel mode: the status file nvpmodel writes, else the conf's default."""
    conf = read_text(root / NVPMODEL_CONF) or ""
    names = {int(i): name for i, name in _MODEL.findall(conf)}
    status = _PMODE.search(read_text(root / NVPMODEL_STATUS) or "")
    if status is not None:
        mode = int(status.group(1))
        return PowerMode(mode, names.get(mode))
    default = _DEFAULT.search(conf)
    if default is not None:
        mode = int(default.group(1))
        return PowerMode(mode, names.get(mode), from_default=True)
    return None


class PowerRail(TypedDict):
    now_mw: int
    avg_mw: int


class Tegrastats(TypedDict, total=False):
    time: str
    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: int
    swap_total_mb: int
    cpu_percent: list[int | None]  # per core; None for a core that is off
    cpu_freq_mhz: list[int | None]
    gpu_percent: int  # GR3D_FREQ
    gpu_freq_mhz: int
    temperatures_c: dict[str, float]
    offline_sensors: list[str]  # reported as -256 C
    power_mw: dict[str, PowerRail]
    vdd_in_mw: int  # whole-module input now (Orin Nano/NX; AGX Orin has no VDD_IN rail)


_T_TIME = re.compile(r"^\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\b")
_T_RAM = re.compile(r"\b(RAM|SWAP) (\d+)/(\d+)([kMG])B\b")
_T_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_T_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_T_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_T_TEMP = re.compile(r"(?<![\w%])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_T_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?![\w])")
_TO_MB = {"k": 1 / 1024, "M": 1.0, "G": 1024.0}


def parse_tegrastats(line: str) -> Tegrastats:
    """One line of ``tegrastats`` output (JetPack 5, 6 and 7 forms, root or not)."""
    out: Tegrastats = {}
    if stamp := _T_TIME.match(line):
        out["time"] = stamp.group(1)
    for kind, used, total, unit in _T_RAM.findall(line):
        used_mb, total_mb = round(int(used) * _TO_MB[unit]), round(int(total) * _TO_MB[unit])
        if kind == "RAM":
            out["ram_used_mb"], out["ram_total_mb"] = used_mb, total_mb
        else:
            out["swap_used_mb"], out["swap_total_mb"] = used_mb, total_mb
    if cpus := _T_CPU.search(line):
        loads: list[int | None] = []
        freqs: list[int | None] = []
        for core in cpus.group(1).split(","):
            match = _T_CORE.match(core.strip())
            loads.append(int(match.group(1)) if match else None)
            freqs.append(int(match.group(2)) if match and match.group(2) else None)
        out["cpu_percent"], out["cpu_freq_mhz"] = loads, freqs
    if gpu := _T_GR3D.search(line):
        out["gpu_percent"] = int(gpu.group(1))
        if gpu.group(2):
            out["gpu_freq_mhz"] = int(gpu.group(2))
    temps: dict[str, float] = {}
    offline: list[str] = []
    for name, value in _T_TEMP.findall(line):
        if float(value) <= OFFLINE_MILLI_C / 1000:
            offline.append(name)
        else:
            temps[name] = float(value)
    out["temperatures_c"], out["offline_sensors"] = temps, offline
    rails = {
        name: PowerRail(now_mw=int(now), avg_mw=int(avg))
        for name, now, avg in _T_RAIL.findall(line)
        if name != "NC"  # an unconnected INA3221 channel
    }
    out["power_mw"] = rails
    if "VDD_IN" in rails:
        out["vdd_in_mw"] = rails["VDD_IN"]["now_mw"]
    return out
