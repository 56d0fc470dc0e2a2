"""When each family's adapter is trained, in a capped child process that yields to the family.

One decision loop (``tick``), run on its own thread by the daemon about once a second and at
once when an app request arrives: a live trainer is paused (SIGSTOP: the CPU is free within
milliseconds), resumed (SIGCONT), or told to checkpoint and stop (SIGUSR1) as the governor
says; with no live trainer, a stopped run is resumed, a requested run or a due family started,
inside the idle window and only when the governor allows. A finished run is judged (held-out
scores from the trainer, the safety suite from serving) and promoted or refused in the registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from insan_edge.config.loader import LoadedConfig
from insan_edge.dataset import count_interactions
from insan_edge.errors import BadRequestError
from insan_edge.governor import Governor, Verdict
from insan_edge.ingest_tables import utcnow as _now
from insan_edge.jobs import write_job, write_json
from insan_edge.logs import kv
from insan_edge.promotion import judge
from insan_edge.registry import ModelVersion, Registry
from insan_edge.runs import Runs
from insan_edge.store import Store
from insan_edge.training.limits import trainer_command, trainer_env, trainer_preexec
from insan_edge.training.protocol import (
    EXIT_STOPPED,
    died_of_memory,
    exit_description,
)

log = logging.getLogger("insan_edge.scheduler")

# (family, candidate, cancel) -> {"score": share safe, "passed": n, "total": n, "failures": [...]}
SafetyCheck = Callable[[str, ModelVersion, threading.Event], dict[str, Any]]


@dataclass
class Live:
    """The trainer process of the run being worked on."""

    run_id: int
    family_id: str
    now: bool
    job_dir: Path
    proc: subprocess.Popen[bytes]
    started: float
    paused_since: float | None = None
    stopping: str | None = None
    micro_batch_size: int | None = None
    last_error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_saved: float = 0.0
    reader: threading.Thread | None = None
    progress: dict[str, Any] = field(default_factory=dict)  # reported, not yet saved


class Scheduler:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        governor: Governor,
        config: Callable[[], LoadedConfig],
        model_path: Path,
        state_dir: Path,
        safety_check: SafetyCheck,
        on_model_change: Callable[[str], None],
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.store, self.registry, self.governor = store, registry, governor
        self.runs = Runs(store)
        self.config, self.model_path, self.state_dir = config, model_path, state_dir
        self.safety_check, self.on_model_change, self.clock = safety_check, on_model_change, clock
        self.live: Live | None = None
        self.phase = "idle"
        self.verdict: Verdict | None = None
        self.trainer_device: str | None = None  # what the last run's worker reported
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        # A parent's hold (insan_edge.pause): while it returns a date, no scheduled run starts.
        self.paused_until: Callable[[], date | None] = lambda: None
        for row in self.runs.interrupted():
            self.runs.update(
                row["id"], status="stopped", reason="the daemon stopped during the run"
            )

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick must not end training for good
                log.exception(kv("scheduler.error"))
            seconds = self.config().config.system.governor.sample_seconds
            self._wake.wait(0.2 if self.live is not None else seconds)
            self._wake.clear()

    def note_request(self) -> None:
        """An app request started: tell the governor and let the loop pause the trainer now."""
        self.governor.request_started()
        if self.live is not None and self.live.paused_since is None:
            self._wake.set()

    def note_request_done(self) -> None:
        self.governor.request_finished()

    def stop(self, timeout: float = 10.0) -> None:
        """Checkpoint and stop a live trainer, then end the loop (daemon shutdown)."""
        self._halt.set()
        self._cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        live = self.live
        if live is not None and live.proc.poll() is None:
            self._ask_stop(live, "the daemon is stopping")
            try:
                live.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(kv("trainer.kill", run=live.run_id, reason="no checkpoint in time"))
                self._signal(live, signal.SIGKILL)
                live.proc.wait()
            self._finished(live, live.proc.returncode)

    def tick(self) -> None:
        loaded = self.config()
        training = loaded.config.system.training
        live = self.live
        if live is not None:
            self._drain(live)
            code = live.proc.poll()
            if code is not None:
                self._finished(live, code)
                return
            verdict = self.governor.check(live.proc.pid, running=True, ignore_quiet=live.now)
            self.verdict = verdict
            self._steer(live, verdict, training.pause_grace_seconds)
            return
        if self._halt.is_set() or not training.enabled:
            return
        pick = self._next(loaded)
        if pick is None:
            return
        run, now = pick
        if not now and self.paused_until() is not None:
            return
        if not now and not training.idle_window.contains(self.clock().time()):
            return
        verdict = self.governor.check(None, running=False, ignore_quiet=now)
        self.verdict = verdict
        if verdict.action == "run":
            self._launch(loaded, run)

    def _steer(self, live: Live, verdict: Verdict, grace: float) -> None:
        if live.stopping is not None:
            return
        why = "; ".join(verdict.reasons)
        if verdict.action == "stop":
            self._ask_stop(live, why)
        elif verdict.action == "pause":
            if live.paused_since is None:
                self._signal(live, signal.SIGSTOP)
                live.paused_since = time.monotonic()
                self.runs.update(live.run_id, status="paused", reason=why)
                log.info(kv("trainer.paused", run=live.run_id, reason=why))
            elif time.monotonic() - live.paused_since > grace:
                self._ask_stop(live, f"paused longer than {grace:.0f} s ({why})")
        elif live.paused_since is not None:
            self._signal(live, signal.SIGCONT)
            live.paused_since = None
            self.runs.update(live.run_id, status="running", reason=None)
            log.info(kv("trainer.resumed", run=live.run_id))

    def _ask_stop(self, live: Live, why: str) -> None:
        """Checkpoint and exit: the trainer finishes its micro-batch, saves, exits 75."""
        live.stopping = why
        self._signal(live, signal.SIGCONT)
        self._signal(live, signal.SIGUSR1)
        live.paused_since = None
        log.info(kv("trainer.stopping", run=live.run_id, reason=why))

    def _signal(self, live: Live, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(live.proc.pid, sig)

    # --- choosing and starting a run -------------------------------------------------------

    def request(self, family_id: str, *, now: bool, by: str) -> dict[str, Any]:
        """Queue a run for the family (or make its open run start now); returns the run row."""
        training = self.config().config.system.training
        if not training.enabled:
            raise BadRequestError("training is turned off in the config (system.training.enabled)")
        self.config().config.family(family_id)
        for row in self.runs.open_runs(family_id):
            if now and not row["now"]:
                self.runs.update(row["id"], now=1)
            self._wake.set()
            return self.runs.get(row["id"])
        row = self.runs.create(family_id, requested_by=by, now=now)
        log.info(kv("training.requested", family=family_id, run=row["id"], now=now, by=by))
        self._wake.set()
        return row

    def due(self, loaded: LoadedConfig, family_id: str) -> str | None:
        """Why the family needs a (new) adapter, or None."""
        training = loaded.config.system.training
        active = self.registry.active(family_id)
        if active is not None and active.needs_retraining:
            return "its adapter was trained on data that has since been erased"
        since = self.runs.trained_upto(family_id)
        new = count_interactions(self.store, family_id, since)
        if since is None and active is None:
            need = training.min_interactions_for_training
            return f"{new} interactions, first model" if new >= need else None
        need = training.retraining_threshold
        return f"{new} new interactions since the last run" if new >= need else None

    def _next(self, loaded: LoadedConfig) -> tuple[dict[str, Any], bool] | None:
        open_runs = [r for r in self.runs.open_runs() if r["family_id"] in loaded.config.families]
        stopped = [r for r in open_runs if r["status"] == "stopped"]
        queued = [r for r in open_runs if r["status"] == "queued"]
        for row in sorted(stopped, key=lambda r: (not r["now"], r["id"])) + queued:
            return row, bool(row["now"])
        busy = {r["family_id"] for r in open_runs}
        for family_id in loaded.config.families:
            if family_id in busy:
                continue
            reason = self.due(loaded, family_id)
            if reason is not None:
                row = self.runs.create(family_id, requested_by="schedule", now=False)
                self.runs.update(row["id"], reason=reason)
                return self.runs.get(row["id"]), False
        return None

    def _prepare_job(self, loaded: LoadedConfig, run: dict[str, Any]) -> Path | None:
        since = self.runs.trained_upto(run["family_id"])
        job = write_job(
            loaded, run, self.store, self.registry, self.model_path, self.state_dir, since
        )
        if job.job_dir is None:
            self.runs.update(
                run["id"], status="failed", finished_at=_now(), reason=job.reason, **job.row
            )
            return None
        self.runs.update(run["id"], **job.row)
        return job.job_dir

    def _launch(self, loaded: LoadedConfig, run: dict[str, Any]) -> None:
        job_dir = Path(run["job_dir"]) if run.get("job_dir") else None
        if job_dir is None or not (job_dir / "job.json").is_file():
            job_dir = self._prepare_job(loaded, run)
            if job_dir is None:
                return
        if (job_dir / "out" / "result.json").is_file():
            # The trainer had finished when the daemon last stopped: judge what it left.
            self.live = None
            self._judge(loaded, self.runs.get(run["id"]), job_dir)
            return
        cap = loaded.config.system.training.max_training_memory_mb
        log_file = (job_dir / "worker.log").open("ab")
        proc = subprocess.Popen(
            trainer_command(job_dir),
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: pause and stop reach all of it
            preexec_fn=lambda: trainer_preexec(cap),
            env=trainer_env(),
        )
        log_file.close()
        live = Live(run["id"], run["family_id"], bool(run["now"]), job_dir, proc, time.monotonic())
        live.reader = threading.Thread(
            target=self._read, args=(live,), daemon=True, name="trainer-out"
        )
        live.reader.start()
        self.live = live
        self.runs.update(
            run["id"],
            status="running",
            reason=None,
            started_at=run.get("started_at") or _now(),
            attempts=(run.get("attempts") or 0) + 1,
        )
        log.info(kv("trainer.started", run=run["id"], family=run["family_id"], pid=proc.pid))

    # --- the trainer's reports -----------------------------------------------------------

    def _read(self, live: Live) -> None:
        assert live.proc.stdout is not None
        for raw in live.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                with live.lock:
                    live.events.append(event)
        if self.live is live:
            self._wake.set()

    def _drain(self, live: Live) -> None:
        with live.lock:
            events, live.events = live.events, []
        progress = live.progress
        for event in events:
            kind = event.get("event")
            if kind == "start":
                self.trainer_device = event.get("device")
                live.micro_batch_size = event.get("micro_batch_size")
                progress["micro_batch_size"] = live.micro_batch_size
                progress["steps"] = event.get("steps")
            elif kind == "progress":
                progress.update({k: event[k] for k in ("step", "steps", "loss") if k in event})
                progress["tokens_per_s"] = event.get("tokens_per_s")
                progress["eta_seconds"] = event.get("eta_seconds")
            elif kind == "error":
                live.last_error = event
        # At most one write a second while it runs; whatever is left, once it has exited.
        if progress and (time.monotonic() - live.last_saved > 1.0 or live.proc.poll() is not None):
            live.last_saved = time.monotonic()
            self.runs.update(live.run_id, **progress)
            progress.clear()

    def _finished(self, live: Live, code: int) -> None:
        if live.reader is not None:  # its last lines (the final progress) are still being read
            live.reader.join(5.0)
        if live.proc.stdout is not None:
            with contextlib.suppress(ValueError, OSError):
                live.proc.stdout.close()
        self._drain(live)
        self.live = None
        run = self.runs.get(live.run_id)
        loaded = self.config()
        training = loaded.config.system.training
        log.info(kv("trainer.exited", run=live.run_id, code=code))
        if code == 0:
            self._judge(loaded, run, live.job_dir)
        elif code == EXIT_STOPPED or (live.stopping is not None and code < 0):
            # Checkpointed, or killed while being stopped (a daemon shutdown that could not
            # wait): either way it resumes from its last checkpoint, if it has one.
            self.runs.update(
                live.run_id, status="stopped", reason=live.stopping or "time budget spent"
            )
        elif died_of_memory(code) and live.stopping is None:
            micro = live.micro_batch_size or run.get("micro_batch_size") or 1
            cap = training.max_training_memory_mb
            log.warning(kv("trainer.out_of_memory", run=run["id"], exit=exit_description(code)))
            if run["attempts"] <= training.oom_retries and micro > 1:
                shutil.rmtree(live.job_dir / "checkpoint", ignore_errors=True)
                job = json.loads((live.job_dir / "job.json").read_text())
                job["train"]["micro_batch_size"] = micro // 2
                write_json(live.job_dir / "job.json", job)
                self.runs.update(
                    live.run_id,
                    status="queued",
                    micro_batch_size=micro // 2,
                    reason=f"out of memory under the {cap} MB cap with micro-batch {micro}; retrying with {micro // 2}",
                )
            else:
                self._fail(
                    live.run_id,
                    f"out of memory under the {cap} MB training cap (micro-batch {micro})",
                )
        else:
            message = (live.last_error or {}).get(
                "message"
            ) or f"the trainer failed ({exit_description(code)})"
            self._fail(live.run_id, str(message), stopped=live.stopping)

    def _fail(self, run_id: int, reason: str, stopped: str | None = None) -> None:
        if stopped is not None:
            reason = f"{reason} (while stopping: {stopped})"
        self.runs.update(run_id, status="failed", reason=reason, finished_at=_now())
        log.warning(kv("training.failed", run=run_id, reason=reason))

    # --- judging ---------------------------------------------------------------------------

    def _judge(self, loaded: LoadedConfig, run: dict[str, Any], job_dir: Path) -> None:
        self.phase = "evaluating"
        self.runs.update(run["id"], status="evaluating")
        try:
            judge(
                loaded,
                run,
                job_dir,
                self.registry,
                self.runs,
                self.model_path.name,
                lambda family, candidate: self.safety_check(family, candidate, self._cancel),
            )
            self.on_model_change(run["family_id"])
        finally:
            self.phase = "idle"

    # --- reporting -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        loaded = self.config()
        training = loaded.config.system.training
        live = self.live
        state = self.phase
        if live is not None:
            state = "stopping" if live.stopping else "paused" if live.paused_since else "running"
        window = training.idle_window
        return {
            "state": state,
            "enabled": training.enabled,
            "idle_window": {
                "start": window.start,
                "end": window.end,
                "open": window.contains(self.clock().time()),
            },
            "governor": self.verdict.as_dict() if self.verdict else None,
            "device": self.trainer_device,
            "run": self.runs.get(live.run_id) if live else None,
            "open_runs": self.runs.open_runs(),
            "due": {f: self.due(loaded, f) for f in loaded.config.families},
            "paused_until": (lambda d: d.isoformat() if d else None)(self.paused_until()),
        }
