"""Presets: named starting values for the system settings, picked from the hardware when unset."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import psutil
import yaml

from insan_edge.config.system import PRESETS

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def preset_values(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise KeyError(name)
    text = files("insan_edge.config").joinpath("presets", f"{name}.yaml").read_text("utf-8")
    data = yaml.safe_load(text) or {}
    assert isinstance(data, dict)
    return data


def detect_preset(
    model_file: Path = DEVICE_TREE_MODEL, total_ram: int | None = None
) -> tuple[str, str]:
    """(preset, why) from the board: a Jetson's device tree, else the machine's RAM."""
    ram = psutil.virtual_memory().total if total_ram is None else total_ram
    gib = ram / 2**30
    try:
        board = model_file.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
    except OSError:
        board = ""
    if "jetson" in board.lower():
        return "jetson", f"device tree says '{board}' ({gib:.0f} GiB RAM)"
    return "development", f"not a Jetson ({gib:.0f} GiB RAM)"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
