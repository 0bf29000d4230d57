"""Mixed load and a memory soak on the main application (nothing is killed here).

16 concurrent clients send a mix of chat (at most 16 tokens), classify, embeddings and tokenize
requests in a bounded loop for ``MAAS_SOAK_S`` seconds: 120 by default (what ``make test`` runs:
the first 60 s window and four memory samples), ``make soak`` runs the 25-minute soak.
What is shown:

* no request is lost (every request sent gets a response, none times out) and none gets a 5xx;
  every answer is a complete, well-formed 200 — checked over the whole run and, separately, over
  the first 60 s (the issue's "60 s of mixed traffic from 16 concurrent clients");
* the memory (RSS) of every replica process of the application, and of the vLLM processes under
  the generator replica, stays flat: sampled after a short warm-up, every 30 s and at the end;
  the growth of each is printed as a table, written as JSON to ``$MAAS_SOAK_REPORT`` if set, and
  bounded (see :data:`GROWTH_BOUND_MIB` and :data:`GROWTH_BOUND_FRACTION`).
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CLASSIFIER, ENCODER, GENERATOR

pytestmark = pytest.mark.integration

APP = "maas"  # the session's main application (tests/conftest.py)
SOAK_S = float(os.environ.get("MAAS_SOAK_S", "120"))
FIRST_WINDOW_S = 60.0
WARMUP_S = min(20.0, SOAK_S / 4)
"""Load before the first memory sample: lazily built caches and allocator pools fill up first."""
SAMPLE_EVERY_S = 30.0
CLIENTS = 16
MAX_REQUESTS = 200_000  # a bound on the loop besides the duration
CLIENT_TIMEOUT_S = 300.0  # far above any answer's latency here: a request this slow counts as lost
CHAT_MAX_TOKENS = 16
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2
GROWTH_BOUND_MIB = 150.0
GROWTH_BOUND_FRACTION = 0.10
"""Allowed RSS growth per process from the first sample to the last: max(10 %, 150 MiB).

The engines allocate their big memory at start (vLLM's KV cache is preallocated, model weights
are loaded once), so a steady state is flat up to allocator noise: glibc arenas of new threads,
torch's CPU allocator and Python's free lists settle at tens of MiB. A leak of one request's
payload (a prompt, a batch of embeddings: a few KiB to ~100 KiB) over the thousands of requests
of a soak exceeds this bound, while a 10 % margin keeps large processes (the vLLM worker, ~2 GiB)
from failing on page-cache and arena jitter.
"""
TEXTS = ["I love this new phone, the battery lasts for days", "the train is late again",
         "it is fine I guess, nothing special", "worst customer service I have ever had",
         "Ünïcödé 世界 🎉 mixed text", "what a great result for the team tonight"]
KINDS = ("chat", "classify", "embeddings", "tokenize")


# ----------------------------------------------------------------------------- requests


@dataclass
class Outcome:
    """One request: its kind, start/end (monotonic s), status (0: no response) and validity."""

    kind: str
    started: float
    ended: float
    status: int
    valid: bool = False
    problem: str = ""


def request_for(kind: str, n: int) -> tuple[str, dict[str, Any]]:
    """(path, body) of the n-th request of a kind; inputs vary with n."""
    text = f"{TEXTS[n % len(TEXTS)]} ({n})"
    if kind == "chat":
        return "/v1/chat/completions", {"model": GENERATOR, "max_tokens": CHAT_MAX_TOKENS,
                                        "temperature": 0, "messages": [{"role": "user", "content": text}]}
    if kind == "classify":
        return "/v1/classify", {"model": CLASSIFIER, "input": [text, TEXTS[(n + 1) % len(TEXTS)]]}
    if kind == "embeddings":
        return "/v1/embeddings", {"model": ENCODER, "input": [text, TEXTS[(n + 2) % len(TEXTS)]]}
    return "/v1/tokenize", {"model": GENERATOR, "prompt": text}


def well_formed(kind: str, body: dict[str, Any]) -> bool:
    """Whether a 200's body is a complete answer of its kind."""
    if kind == "chat":
        usage = body["usage"]
        return isinstance(body["choices"][0]["message"]["content"], str) and \
            1 <= usage["completion_tokens"] <= CHAT_MAX_TOKENS
    if kind == "classify":
        return len(body["data"]) == 2 and all(abs(sum(d["probs"]) - 1) < 1e-3 for d in body["data"])
    if kind == "embeddings":
        return len(body["data"]) == 2 and all(len(d["embedding"]) == EMBEDDING_DIM for d in body["data"])
    return body["count"] == len(body["tokens"]) > 0


def send(http: httpx.Client, kind: str, n: int) -> Outcome:
    path, body = request_for(kind, n)
    started = time.monotonic()
    try:
        response = http.post(path, json=body)
    except httpx.HTTPError as exc:
        return Outcome(kind, started, time.monotonic(), 0, problem=repr(exc))
    ended = time.monotonic()
    try:
        valid = response.status_code == 200 and well_formed(kind, response.json())
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Outcome(kind, started, ended, response.status_code, problem=repr(exc))
    problem = "" if valid else response.text[:300]
    return Outcome(kind, started, ended, response.status_code, valid, problem)


class MixedLoad:
    """``CLIENTS`` threads, each cycling through the kinds from its own offset, until stopped,
    the deadline passes or ``MAX_REQUESTS`` have been sent in all."""

    def __init__(self, base_url: str, deadline: float) -> None:
        self.base_url = base_url
        self.deadline = deadline
        self.outcomes: list[Outcome] = []
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or time.monotonic() >= self.deadline or self._sent >= MAX_REQUESTS:
                return None
            self._sent += 1
            return self._sent

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=CLIENT_TIMEOUT_S) as http:
            for step in range(MAX_REQUESTS):
                n = self._next()
                if n is None:
                    return
                outcome = send(http, KINDS[(client + step) % len(KINDS)], n)
                with self._lock:
                    self.outcomes.append(outcome)

    def sent(self) -> int:
        with self._lock:
            return self._sent

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a load client hung"
        with self._lock:
            return list(self.outcomes)


# ----------------------------------------------------------------------------- memory


@dataclass
class Tracked:
    """One process sampled during the soak: a replica, or a vLLM process under one."""

    label: str
    pid: int
    rss_mib: list[float] = field(default_factory=list)
    ended: bool = False

    def sample(self) -> None:
        import psutil

        try:
            self.rss_mib.append(psutil.Process(self.pid).memory_info().rss / 2**20)
        except psutil.Error:
            self.ended = True

    def tcmalloc(self) -> bool:
        """Whether the process runs with tcmalloc (maas/allocator.py preloads it into the model
        replicas when the machine has it)."""
        try:
            return "libtcmalloc" in Path(f"/proc/{self.pid}/maps").read_text()
        except OSError:
            return False

    def growth_mib(self) -> float:
        return self.rss_mib[-1] - self.rss_mib[0]

    def bound_mib(self) -> float:
        return max(GROWTH_BOUND_MIB, GROWTH_BOUND_FRACTION * self.rss_mib[0])


def process_title(process: Any) -> str:
    import psutil

    try:
        return (process.cmdline() or [process.name()])[0]
    except psutil.Error:
        return ""


SERVE_PROCESSES = {"ray::ProxyActor": "Serve HTTP proxy", "ray::ServeController": "Serve controller",
                   "ray::MetricsRegistry": "metrics actor"}
"""Processes of this machine's Ray that every request also crosses or feeds, by process title."""


def serve_processes() -> list[Tracked]:
    """Serve's HTTP proxy and controller and the metrics actor (found by process title)."""
    import psutil

    tracked = []
    for process in psutil.process_iter():
        title = process_title(process)
        label = next((name for prefix, name in SERVE_PROCESSES.items() if title.startswith(prefix)), None)
        if label is not None:
            tracked.append(Tracked(label, process.pid))
    return tracked


def replica_processes() -> list[Tracked]:
    """Every RUNNING replica of the app (pids as the Serve controller reports them, the same
    details as the dashboard's ``GET /api/serve/applications/``), the vLLM processes under it,
    and :func:`serve_processes`."""
    import psutil
    from ray.serve.context import _get_global_client

    deployments = _get_global_client().get_serve_details()["applications"][APP]["deployments"]
    tracked = []
    for name, deployment in sorted(deployments.items()):
        running = [r for r in deployment["replicas"] if r["state"] == "RUNNING" and r.get("pid")]
        for replica in running:
            label = name if len(running) == 1 else f"{name}#{replica['replica_id']}"
            tracked.append(Tracked(label, replica["pid"]))
            for child in psutil.Process(replica["pid"]).children(recursive=True):
                if "VLLM" in process_title(child):
                    tracked.append(Tracked(f"{label} > {process_title(child)}", child.pid))
    return tracked + serve_processes()


def sample_all(tracked: list[Tracked]) -> None:
    for process in tracked:
        process.sample()


def memory_table(tracked: list[Tracked]) -> str:
    lines = [f"{'process':<52} {'pid':>7} {'start MiB':>10} {'end MiB':>10} {'growth MiB':>11} "
             f"{'growth %':>9} {'peak MiB':>9} tcmalloc"]
    for p in tracked:
        if not p.rss_mib:
            continue
        start, end = p.rss_mib[0], p.rss_mib[-1]
        lines.append(f"{p.label:<52} {p.pid:>7} {start:>10.1f} {end:>10.1f} {end - start:>+11.1f} "
                     f"{100 * (end - start) / start:>+8.1f}% {max(p.rss_mib):>9.1f} {'yes' if p.tcmalloc() else 'no'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """Requests, statuses and latency by kind."""
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_kind[outcome.kind].append(outcome)
    result = {}
    for kind, items in sorted(by_kind.items()):
        latencies = sorted(o.ended - o.started for o in items)
        result[kind] = {
            "requests": len(items),
            "statuses": dict(Counter(str(o.status) for o in items)),
            "invalid": sum(not o.valid for o in items),
            "latency_p50_s": round(statistics.median(latencies), 3),
            "latency_max_s": round(latencies[-1], 3),
        }
    return result


def memory_report(tracked: list[Tracked]) -> list[dict[str, Any]]:
    return [{"process": p.label, "pid": p.pid, "start_mib": round(p.rss_mib[0], 1),
             "end_mib": round(p.rss_mib[-1], 1), "growth_mib": round(p.growth_mib(), 1),
             "growth_pct": round(100 * p.growth_mib() / p.rss_mib[0], 2),
             "peak_mib": round(max(p.rss_mib), 1), "bound_mib": round(p.bound_mib(), 1),
             "tcmalloc": p.tcmalloc(),
             "rss_mib": [round(v, 1) for v in p.rss_mib], "ended": p.ended}
            for p in tracked if p.rss_mib]


def check_outcomes(outcomes: list[Outcome], sent: int, what: str) -> None:
    """No request lost, no 5xx, every answer a complete 200."""
    assert len(outcomes) == sent, f"{what}: {sent - len(outcomes)} requests sent but never answered"
    lost = [o for o in outcomes if o.status == 0]
    assert not lost, f"{what}: {len(lost)} requests without a response, e.g. {lost[0]}"
    server_errors = [o for o in outcomes if o.status >= 500]
    assert not server_errors, f"{what}: {len(server_errors)} 5xx, e.g. {server_errors[0]}"
    bad = [o for o in outcomes if not o.valid]
    assert not bad, f"{what}: {len(bad)} answers not a complete 200, e.g. {bad[0]}"


def write_report(report: dict[str, Any]) -> None:
    path = os.environ.get("MAAS_SOAK_REPORT")
    if path:
        Path(path).write_text(json.dumps(report, indent=2))


def sleep_until(moment: float, stop_early: Callable[[], bool]) -> None:
    """Sleep until ``moment`` (bounded by it), waking every second to check ``stop_early``."""
    while time.monotonic() < moment and not stop_early():
        time.sleep(min(1.0, max(0.0, moment - time.monotonic())))


# ----------------------------------------------------------------------------- the test


@pytest.mark.long  # `make soak` (25 min) and `make test-long` run it; `make test` does not
@pytest.mark.timeout(int(SOAK_S) + 900)
def test_mixed_load_soak_no_loss_no_5xx_flat_memory(service: str) -> None:
    begin = time.monotonic()
    load = MixedLoad(service, begin + SOAK_S)
    load.start()

    def finished() -> bool:  # the loop's other bound
        return load.sent() >= MAX_REQUESTS

    try:
        sleep_until(begin + WARMUP_S, finished)
        tracked = replica_processes()
        sample_all(tracked)
        next_sample = time.monotonic() + SAMPLE_EVERY_S
        while next_sample < begin + SOAK_S and not finished():
            sleep_until(next_sample, finished)
            sample_all(tracked)
            next_sample += SAMPLE_EVERY_S
        sleep_until(begin + SOAK_S, finished)
    finally:
        outcomes = load.stop()
    sample_all(tracked)  # at the end, once every request has been answered
    elapsed = time.monotonic() - begin

    first_window = [o for o in outcomes if o.started < begin + FIRST_WINDOW_S]
    report = {
        "duration_s": round(elapsed, 1), "clients": CLIENTS, "requests": len(outcomes),
        "by_kind": summary(outcomes), "first_60s": summary(first_window),
        "memory_samples": max((len(p.rss_mib) for p in tracked), default=0),
        "memory": memory_report(tracked),
    }
    write_report(report)
    print(f"\nsoak: {len(outcomes)} requests from {CLIENTS} clients in {elapsed:.0f} s")
    print(json.dumps({"by_kind": report["by_kind"], "first_60s": report["first_60s"]}, indent=1))
    print(memory_table(tracked))

    check_outcomes(outcomes, load.sent(), "whole run")
    assert {o.kind for o in first_window} == set(KINDS), "the first 60 s lacked a kind of request"
    check_outcomes(first_window, len(first_window), "first 60 s")
    assert tracked and any("EngineCore" in p.label for p in tracked), [asdict(p) for p in tracked]
    assert not [p.label for p in tracked if p.ended], "a replica process ended during the soak"
    grown = [f"{p.label}: +{p.growth_mib():.0f} MiB (bound {p.bound_mib():.0f})"
             for p in tracked if p.growth_mib() > p.bound_mib()]
    assert not grown, f"memory grew during the soak: {grown}"
