"""The governor's rules, its real host readings, and the Jetson readings from published fixtures."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from insan_edge import jetson
from insan_edge.config.training import GovernorSettings, TrainingSettings
from insan_edge.governor import Governor, Sample

DATA = Path(__file__).parent / "data" / "jetson"
NANO, HOT, AGX = DATA / "orin-nano-jp6", DATA / "orin-nano-jp6-hot", DATA / "agx-orin-jp5"
DEFAULTS = GovernorSettings(), TrainingSettings()
# Limits no real machine reaches, so a test of one rule against the host sees only that rule.
RELAXED = (
    GovernorSettings(
        stop_below_free_mb=0,
        memory_reserve_mb=0,
        max_cpu_percent=100,
        pause_temperature_c=150,
        stop_temperature_c=150,
    ),
    TrainingSettings(max_training_memory_mb=256),
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def calm(**changes: Any) -> Sample:
    """A sample of an idle box with room to train; ``changes`` make it less idle."""
    base = Sample(
        available_mb=5000.0,
        total_mb=7620.0,
        other_cpu_percent=5.0,
        temperature_c=50.25,
        hottest_sensor="tj-thermal",
        gpu_load_percent=0.0,
        power_mode="15W (mode 0)",
        seconds_since_request=None,
        requests_in_flight=0,
        trainer_rss_mb=None,
    )
    return dataclasses.replace(base, **changes)


def judge(sample: Sample, *, running: bool = True, ignore_quiet: bool = False) -> Any:
    return Governor(*DEFAULTS, sysfs_root=NANO).judge(
        sample, running=running, ignore_quiet=ignore_quiet
    )


# --- the rules ----------------------------------------------------------------------------------


def test_an_idle_box_may_run() -> None:
    for running in (True, False):
        verdict = judge(calm(), running=running)
        assert (verdict.action, verdict.reasons) == ("run", ())


def test_low_memory_stops_a_run() -> None:
    verdict = judge(calm(available_mb=200.7))
    assert verdict.action == "stop"
    assert verdict.reasons == ("only 200 MB free (stops below 256 MB)",)
    # not running: the same words, not a second "needs ... to start" about the same memory
    assert judge(calm(available_mb=200.7), running=False).reasons == verdict.reasons


def test_heat_pauses_then_stops() -> None:
    warm = judge(calm(temperature_c=82.5, hottest_sensor="cpu-thermal"))
    assert (warm.action, warm.reasons) == ("pause", ("cpu-thermal at 82.5 °C (pauses at 80 °C)",))
    hot = judge(calm(temperature_c=91.968))
    assert (hot.action, hot.reasons) == ("stop", ("tj-thermal at 92.0 °C (stops at 90 °C)",))
    assert judge(calm(temperature_c=90.0)).action == "stop"  # the limit itself counts
    assert judge(calm(temperature_c=None, hottest_sensor=None)).action == "run"


def test_busy_cpu_pauses() -> None:
    verdict = judge(calm(other_cpu_percent=73.24))
    assert verdict.action == "pause"
    assert verdict.reasons == ("other programs use 73.2% of the CPU (pauses above 60%)",)
    assert judge(calm(other_cpu_percent=60.0)).action == "run"


def test_requests_pause_and_ignore_quiet_never_overrides_one_in_flight() -> None:
    recent = calm(seconds_since_request=3.9)
    assert judge(recent).reasons == ("an app request 3 s ago (quiet period 300 s)",)
    assert judge(recent, ignore_quiet=True).action == "run"
    assert judge(calm(seconds_since_request=300.0)).action == "run"
    busy = calm(requests_in_flight=1, seconds_since_request=0.0)
    for ignore_quiet in (False, True):
        verdict = judge(busy, ignore_quiet=ignore_quiet)
        assert (verdict.action, verdict.reasons) == ("pause", ("1 app request in progress",))
    assert judge(calm(requests_in_flight=2)).reasons == ("2 app requests in progress",)


def test_starting_needs_the_cap_plus_the_reserve() -> None:
    short = calm(available_mb=2047.9)  # defaults: 1536 MB cap + 512 MB reserve
    verdict = judge(short, running=False)
    assert (verdict.action, verdict.reasons) == (
        "pause",
        ("only 2047 MB free (needs 2048 MB to start)",),
    )
    assert judge(short, running=True).action == "run"  # a run already going keeps going
    assert judge(calm(available_mb=2048.0), running=False).action == "run"


def test_stop_wins_and_every_reason_is_kept() -> None:
    sample = calm(
        available_mb=100.0, temperature_c=85.0, requests_in_flight=1, other_cpu_percent=99
    )
    verdict = judge(sample, running=False)
    assert verdict.action == "stop"
    assert verdict.reasons == (
        "only 100 MB free (stops below 256 MB)",
        "tj-thermal at 85.0 °C (pauses at 80 °C)",
        "1 app request in progress",
        "other programs use 99.0% of the CPU (pauses above 60%)",
    )
    assert verdict.describe().startswith("stop: only 100 MB free")
    hot_and_short = judge(calm(available_mb=1000.0, temperature_c=95.0), running=False)
    assert hot_and_short.reasons == (
        "tj-thermal at 95.0 °C (stops at 90 °C)",
        "only 1000 MB free (needs 2048 MB to start)",
    )


def test_update_settings_takes_effect() -> None:
    governor = Governor(*DEFAULTS, sysfs_root=NANO)
    sample = calm(other_cpu_percent=70.0, seconds_since_request=30.0)
    assert governor.judge(sample, running=True).action == "pause"
    governor.update_settings(
        GovernorSettings(max_cpu_percent=80), TrainingSettings(quiet_period_seconds=10)
    )
    assert governor.judge(sample, running=True).action == "run"


def test_as_dict_is_json() -> None:
    verdict = judge(calm(other_cpu_percent=float("nan"), requests_in_flight=1))
    data = json.loads(json.dumps(verdict.as_dict(), allow_nan=False))
    assert data["action"] == "pause"
    assert data["reasons"] == ["1 app request in progress"]
    assert data["sample"]["other_cpu_percent"] is None
    assert data["sample"]["hottest_sensor"] == "tj-thermal"


# --- the real host ------------------------------------------------------------------------------


def test_quiet_period_runs_on_the_clock_from_the_last_request(tmp_path: Path) -> None:
    clock = FakeClock()
    governor = Governor(*RELAXED, sysfs_root=tmp_path, clock=clock)
    assert governor.last() is None
    first = governor.check(running=True)
    assert (first.action, first.sample.seconds_since_request) == ("run", None)
    governor.request_started()
    clock.now += 2
    assert governor.check(running=True).reasons == ("1 app request in progress",)
    assert governor.check(running=True, ignore_quiet=True).action == "pause"
    governor.request_finished()
    clock.now += 3
    verdict = governor.check(running=False)
    assert verdict.reasons == ("an app request 3 s ago (quiet period 300 s)",)
    assert governor.last() is verdict
    assert governor.check(running=False, ignore_quiet=True).action == "run"
    clock.now += 297
    assert governor.check(running=False).action == "run"
    final = governor.last()
    assert final is not None
    json.dumps(final.as_dict(), allow_nan=False)


def test_requests_from_many_threads_balance_out(tmp_path: Path) -> None:
    governor = Governor(*RELAXED, sysfs_root=tmp_path, first_interval_s=0)

    def hammer() -> None:
        for _ in range(200):
            governor.request_started()
            governor.request_finished()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert governor.sample().requests_in_flight == 0


def test_host_sample_is_sane_off_a_jetson(tmp_path: Path) -> None:
    governor = Governor(*RELAXED, sysfs_root=tmp_path)
    sample = governor.sample()
    assert not governor.on_jetson
    assert 0 < sample.available_mb <= sample.total_mb
    assert 0 <= sample.other_cpu_percent <= 100
    assert sample.system_cpu_percent is not None and 0 <= sample.system_cpu_percent <= 100
    assert (sample.gpu_load_percent, sample.power_mode, sample.trainer_rss_mb) == (None, None, None)
    assert sample.trainer_cpu_percent is None
    if sample.temperature_c is not None:  # psutil's sensors; this machine may have none
        assert -40 <= sample.temperature_c <= 150 and sample.hottest_sensor


SPIN = "import time\nend = time.time() + 0.6\nwhile time.time() < end:\n    pass\n"
TRAINER = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {SPIN!r}])\n"


def test_other_cpu_leaves_out_the_trainer_tree(tmp_path: Path) -> None:
    # The "trainer" only waits; its child spins. The child's CPU is the trainer's, not other's.
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER])
    try:
        told = Governor(*RELAXED, sysfs_root=tmp_path, first_interval_s=0)
        untold = Governor(*RELAXED, sysfs_root=tmp_path, first_interval_s=0)
        time.sleep(0.15)  # both interpreters up, the child spinning
        told.sample(trainer.pid), untold.sample()
        time.sleep(0.2)
        mine, theirs = told.sample(trainer.pid), untold.sample()
    finally:
        trainer.wait(timeout=10)
    assert mine.trainer_cpu_percent is not None and mine.trainer_cpu_percent > 5
    assert mine.trainer_rss_mb is not None and mine.trainer_rss_mb > 1
    assert mine.system_cpu_percent is not None and theirs.system_cpu_percent is not None
    expected = max(mine.system_cpu_percent - mine.trainer_cpu_percent, 0.0)
    assert mine.other_cpu_percent == pytest.approx(expected, abs=0.01)
    assert theirs.other_cpu_percent == pytest.approx(theirs.system_cpu_percent)
    # Told about the trainer, the governor sees that much less "other" over the same 0.2 s.
    gap = theirs.other_cpu_percent - mine.other_cpu_percent
    assert gap > 0.5 * mine.trainer_cpu_percent, (mine, theirs)
    gone = told.sample(trainer.pid)  # the trainer has exited: nothing of it left to count
    assert gone.trainer_rss_mb is None and gone.trainer_cpu_percent == 0


def test_a_trainer_born_or_named_between_samples_is_counted(tmp_path: Path) -> None:
    before = Governor(*RELAXED, sysfs_root=tmp_path, first_interval_s=0)
    before.sample()  # its last sample predates the trainer: all the trainer's CPU is new
    trainer = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        after = Governor(*RELAXED, sysfs_root=tmp_path, first_interval_s=0)
        time.sleep(0.1)
        after.sample()  # the trainer runs but is not named yet: no baseline for it
        time.sleep(0.15)
        born, named = before.sample(trainer.pid), after.sample(trainer.pid)
    finally:
        trainer.wait(timeout=10)
    for sample in (born, named):
        assert sample.trainer_cpu_percent is not None and sample.trainer_cpu_percent > 5, sample
        assert sample.other_cpu_percent <= 100 - sample.trainer_cpu_percent + 0.01


# --- a Jetson, from the fixtures ----------------------------------------------------------------


def test_orin_nano_idle_board() -> None:
    governor = Governor(*DEFAULTS, sysfs_root=NANO, first_interval_s=0)
    assert governor.on_jetson
    sample = governor.sample()
    assert (sample.temperature_c, sample.hottest_sensor) == (50.25, "soc1-thermal")
    assert sample.gpu_load_percent == 0.0
    assert sample.power_mode == "MAXN_SUPER (mode 2)"
    skipped = {z.name: z.skipped for z in jetson.thermal_zones(NANO) if z.celsius is None}
    assert skipped == {f"cv{i}-thermal": "unreadable" for i in range(3)}


def test_hot_board_stops_a_run() -> None:
    governor = Governor(*DEFAULTS, sysfs_root=HOT, first_interval_s=0)
    verdict = governor.check(running=True, ignore_quiet=True)
    assert verdict.action == "stop"
    assert "cpu-thermal at 92.0 °C (stops at 90 °C)" in verdict.reasons
    assert verdict.sample.gpu_load_percent == 63.0
    assert json.loads(json.dumps(verdict.as_dict()))["sample"]["temperature_c"] == 91.97


def test_agx_orin_offline_zones_are_skipped() -> None:
    zones = jetson.thermal_zones(AGX)
    assert [z.index for z in zones] == list(range(11))  # zone10 sorts after zone9
    offline = [z.name for z in zones if z.skipped == "offline (-256 °C)"]
    assert offline == ["GPU-therm", "CV0-therm", "CV1-therm", "CV2-therm"]
    sample = Governor(*DEFAULTS, sysfs_root=AGX, first_interval_s=0).sample()
    assert (sample.temperature_c, sample.hottest_sensor) == (42.593, "CPU-therm")
    assert sample.gpu_load_percent == 0.0  # JetPack 5's gpu.0 path
    assert sample.power_mode == "MAXN (mode 0)"


def test_unreadable_placeholder_and_empty_zones_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "board"
    shutil.copytree(NANO, root)
    zones = root / jetson.THERMAL_DIR
    (zones / "thermal_zone8" / "temp").unlink()
    (zones / "thermal_zone8" / "temp").mkdir()  # reading it fails (EISDIR), like EAGAIN does
    (zones / "thermal_zone6" / "temp").write_text("\n")  # an empty read
    (zones / "thermal_zone9").mkdir()
    (zones / "thermal_zone9" / "type").write_text("PMIC-Die\n")
    (zones / "thermal_zone9" / "temp").write_text("100000\n")  # a fixed placeholder
    (zones / "thermal_zone10").mkdir()
    (zones / "thermal_zone10" / "temp").write_text("300000\n")  # no type, impossible value
    skipped = {z.name: z.skipped for z in jetson.thermal_zones(root) if z.skipped}
    assert skipped["tj-thermal"] == "unreadable"
    assert skipped["soc1-thermal"] == "not a number ('')"
    assert skipped["PMIC-Die"] == "placeholder sensor"
    assert skipped["thermal_zone10"] == "out of range (300 °C)"
    hottest = jetson.hottest_zone(root)
    assert hottest is not None and (hottest.name, hottest.celsius) == ("cpu-thermal", 50.031)
    assert jetson.hottest_zone(tmp_path) is None


def test_power_mode_default_trailing_fields_and_unknown_ids(tmp_path: Path) -> None:
    root = tmp_path / "agx"
    shutil.copytree(AGX, root)
    status = root / jetson.NVPMODEL_STATUS
    status.unlink()  # never set with nvpmodel -m: the conf's default applies
    mode = jetson.power_mode(root)
    assert mode == jetson.PowerMode(2, "MODE_30W", from_default=True)
    status.write_text("pmode:0001 fmode:quiet\n")
    assert jetson.power_mode(root) == jetson.PowerMode(1, "MODE_15W")
    status.write_text("pmode:0009\n")
    assert jetson.power_mode(root) == jetson.PowerMode(9, None)
    assert jetson.PowerMode(9, None).label == "mode 9"
    assert jetson.power_mode(tmp_path) is None


def test_is_jetson_and_gpu_load_paths(tmp_path: Path) -> None:
    assert all(jetson.is_jetson(root) for root in (NANO, HOT, AGX))
    assert jetson.board_model(NANO) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert not jetson.is_jetson(tmp_path)
    pi = tmp_path / "pi" / jetson.DT_MODEL
    pi.parent.mkdir(parents=True)
    shutil.copy(DATA.parent / "raspberry-pi" / "device-tree-model", pi)
    assert not jetson.is_jetson(tmp_path / "pi")
    compatible_only = tmp_path / "dt" / jetson.DT_COMPATIBLE
    compatible_only.parent.mkdir(parents=True)
    compatible_only.write_bytes(b"nvidia,p3767-0005\x00nvidia,tegra234\x00")
    assert jetson.is_jetson(tmp_path / "dt")
    assert jetson.gpu_load_percent(tmp_path) is None
    old = tmp_path / "sys/devices/gpu.0/load"
    old.parent.mkdir(parents=True)
    old.write_text("999\n")
    assert jetson.gpu_load_percent(tmp_path) == 99.9


# --- tegrastats -----------------------------------------------------------------------------------


def recorded_lines() -> dict[str, str]:
    lines: dict[str, str] = {}
    name = None
    for line in (DATA / "tegrastats.txt").read_text().splitlines():
        if line.startswith("# ") and ":" in line and " " not in line[2 : line.index(":")]:
            name = line[2 : line.index(":")]
        elif line and not line.startswith("#") and name:
            lines[name] = line
    return lines


EXPECTED: dict[str, dict[str, Any]] = {
    "orin-nano-jp6-busy": {
        "ram_used_mb": 6185,
        "ram_total_mb": 7620,
        "gpu_percent": 63,
        "gpu_freq_mhz": 621,
        "vdd_in_mw": 12479,
        "cpu_percent": [15, 11, 14, 13, 11, 8],
    },
    "orin-nano-jp6-user": {
        "ram_used_mb": 3452,
        "swap_total_mb": 16384,
        "gpu_percent": 0,
        "vdd_in_mw": 4824,
        "cpu_freq_mhz": [1420] * 4 + [729] * 2,
    },
    "orin-nano-cores-off": {
        "cpu_percent": [1, 0, 0, 0, None, None],
        "gpu_percent": 1,
        "vdd_in_mw": 3913,
    },
    "agx-orin-jp5": {
        "ram_total_mb": 62795,
        "gpu_percent": 0,
        "offline_sensors": ["CV0", "CV1", "GPU", "CV2"],
    },
    "agx-orin-jp7": {
        "ram_used_mb": 20642,
        "gpu_percent": 12,
        "gpu_freq_mhz": 1300,
        "offline_sensors": [],
    },
}


def test_every_recorded_line_is_listed() -> None:
    assert set(recorded_lines()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_tegrastats(name: str) -> None:
    parsed = jetson.parse_tegrastats(recorded_lines()[name])
    for key, value in EXPECTED[name].items():
        assert parsed.get(key) == value, key
    temps = parsed["temperatures_c"]
    assert temps and all(-40 < t < 150 for t in temps.values())
    assert parsed["power_mw"] and all(r["now_mw"] >= 0 for r in parsed["power_mw"].values())
    assert "time" in parsed and "RAM" not in parsed["power_mw"]
    json.dumps(parsed)


def test_tegrastats_details() -> None:
    lines = recorded_lines()
    agx = jetson.parse_tegrastats(lines["agx-orin-jp5"])
    assert agx["temperatures_c"]["tj"] == 42.593 and "GPU" not in agx["temperatures_c"]
    assert "vdd_in_mw" not in agx and "NC" not in agx["power_mw"]  # AGX Orin has no VDD_IN
    assert agx["power_mw"]["VDD_GPU_SOC"] == {"now_mw": 2399, "avg_mw": 2399}
    jp7 = jetson.parse_tegrastats(lines["agx-orin-jp7"])
    assert jp7["temperatures_c"]["cpu"] == 52.968  # "cpu@52.968C/52.968C"
    assert jp7["power_mw"]["VDD_CPU_CV"] == {"now_mw": 3268, "avg_mw": 3268}
    nano = jetson.parse_tegrastats(lines["orin-nano-jp6-user"])
    assert "gpu_freq_mhz" not in nano and nano["temperatures_c"]["tj"] == 50.25
    assert jetson.parse_tegrastats("") == {
        "temperatures_c": {},
        "offline_sensors": [],
        "power_mw": {},
    }


# --- board awareness: power mode, GPU load, shared memory (fixtures) -----------------------------


def test_low_power_mode_pauses_and_maxn_or_unnamed_does_not(tmp_path: Path) -> None:
    root = tmp_path / "nano"
    shutil.copytree(NANO, root)
    (root / jetson.NVPMODEL_STATUS).write_text("pmode:0003\n")  # 7W
    governor = Governor(*DEFAULTS, sysfs_root=root, first_interval_s=0)
    sample = dataclasses.replace(governor.sample(), other_cpu_percent=0.0)  # the host's CPU aside
    assert (sample.power_mode, sample.power_watts) == ("7W (mode 3)", 7.0)
    for running in (True, False):
        verdict = governor.judge(sample, running=running, ignore_quiet=True)
        assert verdict.action == "pause"
        assert verdict.reasons == ("power mode 7W (mode 3) is below 10 W (nvpmodel -m for more)",)
    (root / jetson.NVPMODEL_STATUS).write_text("pmode:0000\n")  # 15W
    fifteen = dataclasses.replace(governor.sample(), other_cpu_percent=0.0)
    assert fifteen.power_watts == 15.0
    assert governor.judge(fifteen, running=False, ignore_quiet=True).action == "run"
    off = GovernorSettings(min_power_watts=None)
    assert Governor(off, DEFAULTS[1]).judge(sample, running=True).action == "run"
    assert jetson.PowerMode(2, "MAXN_SUPER").watts is None
    assert jetson.PowerMode(2, "MODE_30W").watts == 30.0
    assert jetson.PowerMode(9, None).watts is None


def test_busy_gpu_keeps_a_run_from_starting_only() -> None:
    governor = Governor(*DEFAULTS, sysfs_root=HOT, first_interval_s=0)
    sample = dataclasses.replace(
        governor.sample(), temperature_c=50.0, available_mb=5000.0, other_cpu_percent=0.0
    )
    assert sample.gpu_load_percent == 63.0
    waiting = governor.judge(sample, running=False, ignore_quiet=True)
    assert waiting.reasons == ("the GPU is 63% busy (starts at or below 50%)",)
    assert governor.judge(sample, running=True, ignore_quiet=True).action == "run"


def test_shared_memory_is_read_from_the_board() -> None:
    nano = Governor(*DEFAULTS, sysfs_root=NANO, first_interval_s=0).sample()
    assert nano.shared_memory
    assert (round(nano.total_mb), round(nano.available_mb)) == (7620, 4168)
    assert nano.gpu_memory_mb == 103.0
    hot = Governor(*DEFAULTS, sysfs_root=HOT, first_interval_s=0)
    verdict = hot.check(running=False, ignore_quiet=True)
    assert verdict.sample.gpu_memory_mb == 1248.0
    assert "only 1435 MB free (needs 2048 MB to start)" in verdict.reasons
    data = json.loads(json.dumps(verdict.as_dict(), allow_nan=False))["sample"]
    assert (data["gpu_memory_mb"], data["shared_memory"]) == (1248.0, True)
    agx = jetson.memory(AGX)
    assert agx is not None and round(agx.total_mb) == 62795


def test_host_memory_comes_from_psutil_off_a_jetson(tmp_path: Path) -> None:
    sample = Governor(*RELAXED, sysfs_root=tmp_path, first_interval_s=0).sample()
    assert (sample.shared_memory, sample.gpu_memory_mb, sample.power_watts) == (False, None, None)
    assert jetson.memory(tmp_path) is None
    assert jetson.memory(Path("/")) is not None  # this Linux box's own meminfo parses
