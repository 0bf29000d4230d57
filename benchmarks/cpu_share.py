"""Where the CPU went during a measurement: CPU seconds per kind of process.

On a 2-core machine a serving stack's own processes (HTTP proxy, ingress, Ray's daemons) take
cycles from the engine; this makes that visible. :class:`CpuAccounting` snapshots the CPU time
(user + system) of every process on the machine before and after a block and groups the
difference by what the process is (from its title or command line).
"""

from __future__ import annotations

import re
from typing import Any

import psutil

GROUPS: tuple[tuple[str, str], ...] = (
    ("vLLM engine", r"VLLM::(EngineCore|Worker)"),
    ("load generator", r"benchmarks\.loadgen|vllm\.benchmarks|benchmarks\.overhead"),
    ("Serve driver", r"benchmarks\.ray_apps"),
    ("maas generator replica", r"ServeReplica:[^ ]*:generator"),
    ("maas ingress replica", r"ServeReplica:[^ ]*:ingress"),
    ("maas tokenizer replica", r"ServeReplica:[^ ]*:tokenizer"),
    ("maas classifier replica", r"ServeReplica:[^ ]*:classifier"),
    ("classify load generator", r"benchmarks\.run"),
    ("Ray Serve LLM replicas", r"ServeReplica:[^ ]*:(LLMServer|OpenAiIngress|LLMRouter)"),
    ("other Serve replicas", r"ServeReplica"),
    ("Serve HTTP proxy", r"ProxyActor"),
    ("maas metrics actor", r"ray::MetricsRegistry"),
    ("Serve controller", r"ServeController"),
    ("Ray daemons", r"raylet|gcs_server|dashboard|monitor\.py|log_monitor|runtime_env|ray::IDLE|"
                    r"ray::(_StatsActor|MetricsStore)|default_worker"),
    ("vLLM API server", r"vllm\.entrypoints|api_server"),
    ("naive server", r"benchmarks\.naive_server"),
)


def _label(proc: psutil.Process) -> str:
    try:
        text = " ".join([proc.name(), *proc.cmdline()])
    except (psutil.Error, OSError):
        return "other"
    for label, pattern in GROUPS:
        if re.search(pattern, text):
            return label
    return "other"


def _snapshot() -> dict[int, tuple[str, float]]:
    seen: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter():
        try:
            times = proc.cpu_times()
            seen[proc.pid] = (_label(proc), times.user + times.system)
        except (psutil.Error, OSError):
            continue
    return seen


class CpuAccounting:
    """``with CpuAccounting() as cpu: ...`` then ``cpu.result()``: CPU seconds per group."""

    def __enter__(self) -> CpuAccounting:
        self.before = _snapshot()
        self.wall = psutil.cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        after = _snapshot()
        self.by_group: dict[str, float] = {}
        for pid, (label, seconds) in after.items():
            start = self.before.get(pid, (label, 0.0))[1]  # new processes count from zero
            self.by_group[label] = self.by_group.get(label, 0.0) + max(0.0, seconds - start)
        end = psutil.cpu_times()
        self.idle_s = (end.idle - self.wall.idle) + (getattr(end, "iowait", 0) - getattr(self.wall, "iowait", 0))

    def result(self) -> dict[str, Any]:
        groups = sorted(self.by_group.items(), key=lambda item: -item[1])
        return {"cpu_seconds": {label: round(s, 1) for label, s in groups if s >= 0.05},
                "idle_cpu_seconds": round(self.idle_s, 1)}
