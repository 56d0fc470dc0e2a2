"""``insan-edge doctor``: on this machine (a real report) and on the recorded Jetson trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from insan_edge import doctor, jetson
from insan_edge.cli import main
from insan_edge.config import parse_config
from insan_edge.config.root import Config
from insan_edge.doctor import Capabilities, Finding, run_checks, unit_limits

REPO = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data" / "jetson"
NANO, HOT = DATA / "orin-nano-jp6", DATA / "orin-nano-jp6-hot"
UNIT = REPO / "systemd" / "insan-edge.service"
CPU_ONLY = Capabilities(False, ("CPUExecutionProvider",), False)
JETSON_BUILDS = Capabilities(True, ("CUDAExecutionProvider", "CPUExecutionProvider"), True)


def config(tmp_path: Path, system: str = "") -> Config:
    text = f"""\
system:
  preset: jetson
  paths:
    state_dir: {tmp_path / "state"}
    socket: {tmp_path / "run" / "api.sock"}
{system}families:
  smith:
    members:
      emma: {{name: Emma, age: 8, role: child}}
"""
    (tmp_path / "run").mkdir(exist_ok=True, mode=0o750)
    return parse_config(text).config


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def test_this_machine_gives_a_readable_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"system:\n  preset: jetson\n  paths:\n    state_dir: {tmp_path / 'state'}\n"
        f"    socket: {tmp_path / 'api.sock'}\n"
        "families:\n  smith:\n    members:\n      emma: {name: Emma, age: 8, role: child}\n"
    )
    assert main(["doctor", "--config", str(path), "--unit", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"insan-edge doctor: {path} (preset jetson)"
    # Free memory may dip on a busy CI machine: a warning there, never a failure.
    assert lines[-1] == "0 failed, 0 warnings: fine" or "WARN  free memory" in out
    assert any(
        line.startswith("  OK    memory budget: 2727 MB at the peak (daemon 750 MB")
        for line in lines
    )
    assert "serving GPU: llama.cpp is a CPU-only build; serving runs on the CPU" in out
    assert "training GPU: torch has no CUDA; training runs on the CPU" in out
    assert "--    jetson: not a Jetson" in out
    assert f"--    systemd unit: {tmp_path / 'none'} is not installed" in out
    assert main(["doctor", "--config", str(path), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert {f["check"] for f in findings} >= {"memory budget", "disk", "socket dir", "model file"}
    assert all(f["level"] in ("ok", "skip") for f in findings if f["check"] != "free memory")


def test_an_orin_nano_without_the_cuda_builds(tmp_path: Path) -> None:
    found = by_check(
        run_checks(config(tmp_path), root=NANO, unit=UNIT, capabilities=lambda: CPU_ONLY)
    )
    budget = found["memory budget"]
    assert budget.level == "ok"
    assert budget.message.startswith("2727 MB at the peak")
    assert "of 6420 MB (7620 MB total less 1200 MB for the OS)" in budget.message
    assert found["free memory"].level == "ok"
    assert "4168 MB available now" in found["free memory"].message
    assert (
        "103 MB of the shared RAM is held by the GPU (NvMapMemUsed)" in found["free memory"].message
    )
    for check in ("serving GPU", "topic model GPU", "training GPU"):
        assert (found[check].level, found[check].fix) == (
            "warn",
            "run jetson/install.sh (the CUDA builds)",
        )
    assert found["jetson"].message == "NVIDIA Jetson Orin Nano Developer Kit"
    assert (found["power mode"].level, found["power mode"].message) == ("ok", "MAXN_SUPER (mode 2)")
    assert found["temperature"].level == "ok"
    assert found["systemd unit"].level == "ok"
    assert found["systemd slice"] == Finding(
        "systemd slice", "ok", "MemoryMax 4096 MB for the product, above the unit's 3584 MB"
    )
    assert found["systemd unit"].message.startswith("MemoryMax 3584 MB against 2727 MB")
    cpu_config = config(tmp_path, "  model: {n_gpu_layers: 0}\n")
    zero = by_check(
        run_checks(cpu_config, root=NANO, unit=UNIT, capabilities=lambda: JETSON_BUILDS)
    )
    assert (
        zero["serving GPU"].fix == "set system.model.n_gpu_layers: auto (the jetson preset's value)"
    )
    with_builds = run_checks(
        config(tmp_path), root=NANO, unit=UNIT, capabilities=lambda: JETSON_BUILDS
    )
    assert all(f.level in ("ok", "skip") for f in with_builds), with_builds


def test_a_hot_board_low_on_memory_in_7w(tmp_path: Path) -> None:
    root = tmp_path / "hot"
    shutil.copytree(HOT, root)
    (root / jetson.NVPMODEL_STATUS).write_text("pmode:0003\n")
    found = by_check(
        run_checks(config(tmp_path), root=root, unit=UNIT, capabilities=lambda: JETSON_BUILDS)
    )
    assert found["power mode"].level == "warn"
    assert found["power mode"].message == "7W (mode 3): under 10 W, training is postponed"
    assert found["power mode"].fix == "sudo nvpmodel -m 0 (15W (mode 0))"
    assert found["temperature"].level == "warn"
    assert found["temperature"].message == "hottest cpu-thermal at 92.0 °C (training stops at 90)"
    assert found["free memory"].level == "warn"
    assert "1435 MB available now; a run needs 2048 MB" in found["free memory"].message


def test_a_trainer_cap_over_the_budget_fails_and_says_what_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = config(tmp_path, "  training: {max_training_memory_mb: 6000}\n")
    found = by_check(run_checks(big, root=NANO, unit=UNIT, capabilities=lambda: JETSON_BUILDS))
    assert found["memory budget"].level == "fail"
    assert found["memory budget"].fix == (
        "lower system.training.max_training_memory_mb to 5229 or serve a smaller GGUF (system.model.path)"
    )
    unit = found["systemd unit"]
    assert unit.level == "fail" and "the trainer would be OOM-killed" in unit.message
    assert unit.fix is not None and unit.fix.startswith("raise MemoryMax to 7447M")


def test_unit_limits_and_model_and_socket_problems(tmp_path: Path) -> None:
    assert unit_limits(UNIT.read_text()) == {"MemoryHigh": 3072.0, "MemoryMax": 3584.0}
    assert unit_limits("MemoryMax=infinity\nMemoryHigh=2147483648\n") == {"MemoryHigh": 2048.0}
    missing = config(tmp_path, f"  model: {{path: {tmp_path / 'nope.gguf'}}}\n")
    found = by_check(run_checks(missing, root=NANO, capabilities=lambda: CPU_ONLY))
    assert found["model file"].level == "fail"
    assert found["model file"].message == f"{tmp_path / 'nope.gguf'} does not exist"
    assert found["memory budget"].message.startswith("2486 MB")  # a missing file counts 0 MB
    (tmp_path / "nope.gguf").write_bytes(b"PK\x03\x04 not a model")
    assert by_check(run_checks(missing, root=NANO, capabilities=lambda: CPU_ONLY))[
        "model file"
    ].message.endswith("is not a GGUF file")
    (tmp_path / "run").chmod(0o777)
    found = by_check(run_checks(config(tmp_path), capabilities=lambda: CPU_ONLY))
    assert (found["socket dir"].level, found["socket dir"].fix) == (
        "fail",
        f"chmod o-w {tmp_path / 'run'}",
    )


def test_a_model_the_trainer_cannot_read_is_a_warning(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    from insan_edge.training.ggufio import KNOWN_ARCHITECTURES

    assert frozenset(KNOWN_ARCHITECTURES) == doctor.TRAINABLE
    served = config(tmp_path, f"  model: {{path: {tiny_model_path}}}\n")
    found = by_check(run_checks(served, root=NANO, capabilities=lambda: CPU_ONLY))["model file"]
    assert found.level == "ok" and found.message.endswith("architecture llama")
    qwen = tmp_path / "qwen.gguf"
    data = tiny_model_path.read_bytes()
    qwen.write_bytes(data.replace(b"llama", b"qwen2", 1))  # general.architecture's value
    found = by_check(
        run_checks(
            config(tmp_path, f"  model: {{path: {qwen}}}\n"),
            root=NANO,
            capabilities=lambda: CPU_ONLY,
        )
    )["model file"]
    assert (
        found.level == "warn"
        and "architecture qwen2: served, but the trainer knows only gemma3, llama" in found.message
    )


def test_a_slice_below_the_unit_is_a_warning(tmp_path: Path) -> None:
    unit = tmp_path / "insan-edge.service"
    shutil.copy(UNIT, unit)
    (tmp_path / "insan-edge.slice").write_text("[Slice]\nMemoryMax=3G\n")
    found = by_check(
        run_checks(config(tmp_path), root=NANO, unit=unit, capabilities=lambda: CPU_ONLY)
    )
    assert found["systemd slice"].level == "warn"
    assert found["systemd slice"].fix == (
        "raise the slice's MemoryMax to at least 3584M (systemctl edit insan-edge.slice)"
    )


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    base = f"system:\n  paths:\n    state_dir: {tmp_path / 's'}\n    socket: {tmp_path / 'r' / 'a.sock'}\n"
    fam = "families:\n  smith:\n    members:\n      emma: {name: Emma, age: 8, role: child}\n"
    path.write_text(base + fam)  # the socket's folder is missing: a warning
    assert main(["doctor", "--config", str(path)]) == 0
    assert main(["doctor", "--config", str(path), "--strict"]) == 2
    assert "WARN  socket dir" in capsys.readouterr().out
    path.write_text(base + f"  model: {{path: {tmp_path / 'x.gguf'}}}\n" + fam)
    assert main(["doctor", "--config", str(path)]) == 1
    assert "FAIL  model file" in capsys.readouterr().out
