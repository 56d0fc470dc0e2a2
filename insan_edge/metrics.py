"""``GET /metrics``: the daemon's counters, histograms and gauges in Prometheus text format.

Requests are counted here as they are answered; everything else is read from the status dict
(one source for ``insan-edge status``, ``/v1/status`` and this page) when the page is asked for.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_STATES = (
    "queued",
    "running",
    "paused",
    "stopped",
    "evaluating",
    "promoted",
    "refused",
    "failed",
)


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float | int | None) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value)) if isinstance(value, float) else str(value)


class RequestMetrics:
    """Requests by listener, route and status, with latency histograms; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str, int]] = Counter()
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = {}
        self.auth_failures: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()

    def observe(self, via: str, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(via, route, method, status)] += 1
            counts = self.buckets.setdefault((via, route), [0] * (len(BUCKETS) + 1))
            for i, upper in enumerate(BUCKETS):
                if seconds <= upper:
                    counts[i] += 1
            counts[-1] += 1
            self.sums[(via, route)] = self.sums.get((via, route), 0.0) + seconds

    def auth_failed(self, reason: str) -> None:
        with self._lock:
            self.auth_failures[reason] += 1

    def limited(self, what: str) -> None:
        with self._lock:
            self.rate_limited[what] += 1

    def lines(self) -> list[str]:
        with self._lock:
            out = [
                "# HELP insan_edge_http_requests_total Requests answered, by listener, route and status.",
                "# TYPE insan_edge_http_requests_total counter",
            ]
            for (via, route, method, status), n in sorted(self.requests.items()):
                labels = _labels(via=via, route=route, method=method, status=status)
                out.append(f"insan_edge_http_requests_total{labels} {n}")
            out += [
                "# HELP insan_edge_http_request_seconds Time to answer a request.",
                "# TYPE insan_edge_http_request_seconds histogram",
            ]
            for (via, route), counts in sorted(self.buckets.items()):
                for upper, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                    labels = _labels(via=via, route=route, le=upper)
                    out.append(f"insan_edge_http_request_seconds_bucket{labels} {n}")
                labels = _labels(via=via, route=route)
                out.append(
                    f"insan_edge_http_request_seconds_sum{labels} {self.sums[(via, route)]!r}"
                )
                out.append(f"insan_edge_http_request_seconds_count{labels} {counts[-1]}")
            out += [
                "# HELP insan_edge_auth_failures_total Refused LAN requests, by reason.",
                "# TYPE insan_edge_auth_failures_total counter",
            ]
            out += [
                f"insan_edge_auth_failures_total{_labels(reason=r)} {n}"
                for r, n in sorted(self.auth_failures.items())
            ]
            out += [
                "# HELP insan_edge_rate_limited_total LAN requests refused with 429, by limit.",
                "# TYPE insan_edge_rate_limited_total counter",
            ]
            out += [
                f"insan_edge_rate_limited_total{_labels(limit=w)} {n}"
                for w, n in sorted(self.rate_limited.items())
            ]
            return out


def _family(
    out: list[str], name: str, kind: str, help_: str, samples: list[tuple[dict[str, Any], Any]]
) -> None:
    out += [f"# HELP insan_edge_{name} {help_}", f"# TYPE insan_edge_{name} {kind}"]
    out += [f"insan_edge_{name}{_labels(**labels)} {_number(v)}" for labels, v in samples]


def render(
    status: dict[str, Any],
    requests: RequestMetrics,
    runs_by_state: dict[str, int],
    versions: dict[str, int],
) -> str:
    """The whole page. ``versions``: the active adapter version per family (0: base model)."""
    s = status
    out = requests.lines()
    simple: list[tuple[str, str, str, Any]] = [
        ("uptime_seconds", "gauge", "Seconds since the daemon started.", s["uptime_seconds"]),
        ("recommendation_requests_total", "counter", "Recommendation requests.", s["requests"]["recommendations"]),
        ("cache_hits_total", "counter", "Recommendations answered from the cache.", s["requests"]["cache_hits"]),
        ("generations_total", "counter", "Generations run by the model.", s["requests"]["generations"]),
        ("generated_tokens_total", "counter", "Tokens the model wrote.", s["requests"]["generated_tokens"]),
        ("generation_seconds_total", "counter", "Time spent generating.", s["requests"]["generation_seconds"]),
        ("rejected_busy_total", "counter", "Requests refused with 503 under the generation cap.", s["requests"]["rejected_busy"]),
        ("items_served_total", "counter", "Items that passed safety and were returned.", s["safety"]["items_served"]),
        ("interactions_stored", "gauge", "Interactions in the store.", s["ingest"]["interactions"]),
        ("quarantined_events", "gauge", "Events that could not be stored, kept with their reason.", s["ingest"]["quarantined"]),
        ("resident_memory_bytes", "gauge", "Resident memory of the daemon.", int(s["memory"]["rss_mb"] * 2**20)),
        ("available_memory_bytes", "gauge", "Memory available on the box.", int(s["memory"]["available_mb"] * 2**20)),
    ]  # fmt: skip
    for name, kind, help_, value in simple:
        _family(out, name, kind, help_, [({}, value)])
    drops = sorted(s["safety"]["drops_by_rule"].items())
    _family(out, "items_dropped_total", "counter", "Items safety removed, by rule.",
            [({"rule": rule}, n) for rule, n in drops])  # fmt: skip
    checks = s.get("checks") or {}
    _family(out, "checks_blocked_total", "counter", "Items apps asked about that were not allowed.",
            [({}, checks.get("items_blocked", 0))])  # fmt: skip
    _family(out, "checks_blocked_by_rule_total", "counter", "Rules that blocked checked items.",
            [({"rule": r}, n) for r, n in sorted((checks.get("blocked_by_rule") or {}).items())])  # fmt: skip
    _family(out, "training_runs", "gauge", "Training runs in the store, by state.",
            [({"state": st}, runs_by_state.get(st, 0)) for st in RUN_STATES])  # fmt: skip
    training = s.get("training") or {}
    _family(out, "training_active", "gauge", "1 while a trainer is running or paused.",
            [({}, int(training.get("state") in ("running", "paused", "stopping")))])  # fmt: skip
    sample = (training.get("governor") or {}).get("sample") or {}
    governor = [
        ("governor_available_memory_mb", "available_mb", "Free memory the governor last saw."),
        ("governor_other_cpu_percent", "other_cpu_percent", "CPU used by other programs."),
        ("governor_temperature_celsius", "temperature_c", "Hottest sensor."),
        ("governor_gpu_load_percent", "gpu_load_percent", "GPU load (Jetson)."),
        ("governor_trainer_rss_mb", "trainer_rss_mb", "Resident memory of the trainer."),
    ]
    for name, key, help_ in governor:
        if sample.get(key) is not None:
            _family(out, name, "gauge", help_, [({}, sample[key])])
    _family(out, "family_model_version", "gauge", "Adapter version serving each family (0: base).",
            [({"family": f}, v) for f, v in sorted(versions.items())])  # fmt: skip
    return "\n".join(out) + "\n"
