"""The resource governor: may a training run start or go on now, must it pause, or stop, and why.

``sample()`` reads the machine (psutil; thermal zones, GPU load and power mode on a Jetson);
``judge()`` turns a sample into a verdict by the rules below; ``check()`` does both and keeps
the verdict for the daemon's status. The API calls ``request_started``/``request_finished`` on
every request, so training keeps out of the family's way.

Rules: stop (free the memory now) when available memory is below ``stop_below_free_mb`` or the
hottest sensor reaches ``stop_temperature_c``. Pause when a request is in flight, or the last
one ended less than the quiet period ago (unless ``ignore_quiet``, which never overrides a
request in flight), when other programs use more than ``max_cpu_percent`` of the CPU, or the
hottest sensor reaches ``pause_temperature_c``. A run that has not started also needs the
trainer's memory cap plus the reserve free. Stop wins over pause.

On a Jetson: a power mode whose name gives fewer watts than ``min_power_watts`` (the Orin
Nano's 7W) pauses training (a run there would take hours and throttle the box), and a GPU busier
than ``max_gpu_percent`` keeps a run from starting (the GPU is serving; a running trainer's own
GPU load is not held against it). The Orin's CPU and GPU share its RAM: memory is read from the
board's /proc/meminfo, whose MemAvailable already counts CUDA allocations (nvmap) as used, and
their size (NvMapMemUsed) is reported as ``gpu_memory_mb``; a trainer's CUDA memory is not in
its RSS, so on a shared-memory board only the free-memory rules bound it.

CPU: "other" is all cores' busy time over the interval since the previous sample minus the
trainer process tree's CPU time over the same interval, as a percent of all cores. The first
sample of a governor measures over a short blocking interval (``first_interval_s``, 0.1 s).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from insan_edge import jetson
from insan_edge.config.training import GovernorSettings, TrainingSettings
from insan_edge.logs import kv

log = logging.getLogger(__name__)

MIB = 2**20
Action = Literal["run", "pause", "stop"]


@dataclass(frozen=True)
class Sample:
    available_mb: float  # psutil.virtual_memory().available
    total_mb: float
    other_cpu_percent: float  # everything but the trainer's tree, percent of all cores
    temperature_c: float | None  # hottest valid sensor
    hottest_sensor: str | None
    gpu_load_percent: float | None  # Jetson only
    power_mode: str | None  # Jetson only: nvpmodel mode, e.g. "15W (mode 0)"
    seconds_since_request: float | None  # None: no API request seen since start
    requests_in_flight: int
    trainer_rss_mb: float | None  # RSS of the trainer's process tree, when a pid was given
    system_cpu_percent: float | None = None  # all busy time, percent of all cores
    trainer_cpu_percent: float | None = None  # the trainer's tree, percent of all cores
    power_watts: float | None = None  # Jetson only: the mode's budget; None for MAXN or unnamed
    gpu_memory_mb: float | None = None  # Jetson only: NvMapMemUsed, CUDA memory in shared RAM
    shared_memory: bool = False  # CPU and GPU share RAM (a Jetson): available_mb covers both


def _json(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2) if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...]  # plain words with the numbers, empty for "run"
    sample: Sample

    def describe(self) -> str:
        return self.action + (": " + "; ".join(self.reasons) if self.reasons else "")

    def as_dict(self) -> dict[str, Any]:
        sample = {k: _json(v) for k, v in dataclasses.asdict(self.sample).items()}
        return {"action": self.action, "reasons": list(self.reasons), "sample": sample}


@dataclass(frozen=True)
class _CpuMark:
    at: float  # time.monotonic()
    wall: float  # time.time(), for the age of a process first seen
    total: float  # CPU seconds, all cores
    busy: float
    root: tuple[int, float] | None  # the trainer (pid, create time)
    tree: dict[tuple[int, float], float]  # trainer tree member -> its CPU seconds
    pids: frozenset[int]  # every process alive at the mark


def _system_times() -> tuple[float, float]:
    """(total, busy) CPU seconds of all cores, counted the way psutil.cpu_percent counts."""
    times = psutil.cpu_times()
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    return total, total - fields.get("idle", 0.0) - fields.get("iowait", 0.0)


def _tree_usage(pid: int | None) -> tuple[dict[tuple[int, float], float], float | None]:
    """CPU seconds per member of ``pid``'s process tree, keyed (pid, create time), with reaped
    children's time included (they die into their parent), and the tree's RSS in MB."""
    cpu: dict[tuple[int, float], float] = {}
    rss = 0
    try:
        root = psutil.Process(pid) if pid is not None else None
        procs = [root, *root.children(recursive=True)] if root else []
    except psutil.Error:
        procs = []
    for proc in procs:
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                key = (proc.pid, proc.create_time())
                cpu[key] = t.user + t.system + t.children_user + t.children_system
                rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return cpu, (rss / MIB if cpu else None)


def _trainer_delta(prev: _CpuMark, now: _CpuMark) -> float:
    """The trainer tree's CPU seconds between two marks."""
    interval = max(now.at - prev.at, 1e-6)
    spent = 0.0
    for key, cpu in now.tree.items():
        if key in prev.tree:
            spent += max(cpu - prev.tree[key], 0.0)
        elif key[0] not in prev.pids:
            spent += cpu  # born during the interval: all of it is new
        else:  # older but not measured before (a trainer pid given late): its average rate
            spent += cpu * min(1.0, interval / max(now.wall - key[1], interval))
    if prev.root is not None and prev.root == now.root:
        # A member that died was reaped into its parent's children time: counted there again.
        spent -= sum(cpu for key, cpu in prev.tree.items() if key not in now.tree)
    return max(spent, 0.0)


def _host_temperature() -> tuple[float | None, str | None]:
    """The hottest of psutil's sensors (none on many VMs and containers)."""
    try:
        groups = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
    except (OSError, ValueError):
        return None, None
    readings = [
        (float(entry.current), f"{chip}/{entry.label}" if entry.label else chip)
        for chip, entries in groups.items()
        for entry in entries
        if entry.current is not None and jetson.VALID_C[0] <= entry.current <= jetson.VALID_C[1]
    ]
    best = max(readings, key=lambda reading: reading[0], default=None)
    return best if best else (None, None)


class Governor:
    def __init__(
        self,
        settings: GovernorSettings,
        training: TrainingSettings,
        *,
        sysfs_root: Path = Path("/"),
        clock: Callable[[], float] = time.monotonic,
        first_interval_s: float = 0.1,
    ) -> None:
        self._settings, self._training = settings, training
        self._root = sysfs_root
        self._clock = clock
        self._first_interval = first_interval_s
        self._jetson = jetson.is_jetson(sysfs_root)
        self._lock = threading.Lock()
        self._cpu_lock = threading.Lock()
        self._in_flight = 0
        self._last_request: float | None = None
        self._last: Verdict | None = None
        self._mark: _CpuMark | None = None
        self._cpu: tuple[float, float | None, float] = (0.0, None, 0.0)  # system, trainer, other

    @property
    def on_jetson(self) -> bool:
        return self._jetson

    def update_settings(self, settings: GovernorSettings, training: TrainingSettings) -> None:
        with self._lock:
            self._settings, self._training = settings, training

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._last_request = self._clock()

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            self._last_request = self._clock()  # the quiet period runs from the last activity

    def _mark_now(self, pid: int | None) -> tuple[_CpuMark, float | None]:
        tree, rss = _tree_usage(pid)
        root = next((key for key in tree if key[0] == pid), None)
        total, busy = _system_times()
        pids = frozenset(psutil.pids())
        return _CpuMark(time.monotonic(), time.time(), total, busy, root, tree, pids), rss

    def _measure_cpu(self, pid: int | None) -> tuple[float, float | None, float, float | None]:
        """(system %, trainer %, other %, trainer RSS MB) since the previous sample."""
        with self._cpu_lock:
            if self._mark is None:
                self._mark, _ = self._mark_now(pid)
                time.sleep(self._first_interval)
            now, rss = self._mark_now(pid)
            prev = self._mark
            span = now.total - prev.total
            if span > 0:  # else too soon to tell (one clock tick): the last figures stand
                busy = min(max(now.busy - prev.busy, 0.0), span)
                trainer = _trainer_delta(prev, now) if pid is not None else None
                other = busy - min(trainer or 0.0, busy)
                trainer_pct = None if trainer is None else min(100 * trainer / span, 100.0)
                self._cpu = (100 * busy / span, trainer_pct, 100 * other / span)
                self._mark = now
            system, trainer_pct, other_pct = self._cpu
            return system, trainer_pct if pid is not None else None, other_pct, rss

    def _temperature(self) -> tuple[float | None, str | None]:
        if self._jetson:
            zone = jetson.hottest_zone(self._root)
            return (zone.celsius, zone.name) if zone else (None, None)
        return _host_temperature()

    def sample(self, trainer_pid: int | None = None) -> Sample:
        system, trainer, other, rss = self._measure_cpu(trainer_pid)
        board = jetson.memory(self._root) if self._jetson else None
        if board is None:
            vm = psutil.virtual_memory()
            board = jetson.Memory(vm.total / MIB, vm.available / MIB, None)
        temperature, sensor = self._temperature()
        gpu = jetson.gpu_load_percent(self._root) if self._jetson else None
        mode = jetson.power_mode(self._root) if self._jetson else None
        with self._lock:
            in_flight, last = self._in_flight, self._last_request
            since = None if last is None else max(self._clock() - last, 0.0)
        return Sample(
            available_mb=board.available_mb,
            total_mb=board.total_mb,
            other_cpu_percent=other,
            temperature_c=temperature,
            hottest_sensor=sensor,
            gpu_load_percent=gpu,
            power_mode=mode.label if mode else None,
            seconds_since_request=since,
            requests_in_flight=in_flight,
            trainer_rss_mb=rss,
            system_cpu_percent=system,
            trainer_cpu_percent=trainer,
            power_watts=mode.watts if mode else None,
            gpu_memory_mb=board.gpu_mb,
            shared_memory=self._jetson,
        )

    def judge(self, sample: Sample, *, running: bool, ignore_quiet: bool = False) -> Verdict:
        with self._lock:
            gov, training = self._settings, self._training
        stop: list[str] = []
        pause: list[str] = []
        free, short = int(sample.available_mb), sample.available_mb < gov.stop_below_free_mb
        if short:
            stop.append(f"only {free} MB free (stops below {gov.stop_below_free_mb} MB)")
        temp, sensor = sample.temperature_c, sample.hottest_sensor or "hottest sensor"
        if temp is not None and temp >= gov.stop_temperature_c:
            stop.append(f"{sensor} at {temp:.1f} °C (stops at {gov.stop_temperature_c:g} °C)")
        elif temp is not None and temp >= gov.pause_temperature_c:
            pause.append(f"{sensor} at {temp:.1f} °C (pauses at {gov.pause_temperature_c:g} °C)")
        if sample.requests_in_flight > 0:
            n = sample.requests_in_flight
            pause.append(f"{n} app request{'s' if n != 1 else ''} in progress")
        elif (
            not ignore_quiet
            and sample.seconds_since_request is not None
            and sample.seconds_since_request < training.quiet_period_seconds
        ):
            ago, quiet = int(sample.seconds_since_request), training.quiet_period_seconds
            pause.append(f"an app request {ago} s ago (quiet period {quiet:g} s)")
        if sample.other_cpu_percent > gov.max_cpu_percent:
            pause.append(
                f"other programs use {sample.other_cpu_percent:.1f}% of the CPU"
                f" (pauses above {gov.max_cpu_percent:g}%)"
            )
        watts, floor = sample.power_watts, gov.min_power_watts
        if watts is not None and floor is not None and watts < floor:
            mode = sample.power_mode or f"{watts:g}W"
            pause.append(f"power mode {mode} is below {floor:g} W (nvpmodel -m for more)")
        gpu = sample.gpu_load_percent
        if not running and gpu is not None and gpu > gov.max_gpu_percent:
            pause.append(
                f"the GPU is {gpu:.0f}% busy (starts at or below {gov.max_gpu_percent:g}%)"
            )
        needed = training.max_training_memory_mb + gov.memory_reserve_mb
        if not running and sample.available_mb < needed and not short:
            pause.append(f"only {free} MB free (needs {needed} MB to start)")
        if stop:
            return Verdict("stop", tuple(stop + pause), sample)
        return Verdict("pause" if pause else "run", tuple(pause), sample)

    def check(
        self, trainer_pid: int | None = None, *, running: bool, ignore_quiet: bool = False
    ) -> Verdict:
        verdict = self.judge(self.sample(trainer_pid), running=running, ignore_quiet=ignore_quiet)
        with self._lock:
            previous, self._last = self._last, verdict
        if previous is None or previous.action != verdict.action:
            log.info(kv("governor", action=verdict.action, why="; ".join(verdict.reasons)))
        return verdict

    def last(self) -> Verdict | None:
        with self._lock:
            return self._last
