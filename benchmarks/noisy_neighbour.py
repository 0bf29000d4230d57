"""Noisy neighbour: how much one tenant's flood slows another tenant's requests.

::

    .venv/bin/python -m benchmarks.noisy_neighbour          # about 6 minutes → benchmarks/results/
    .venv/bin/python -m benchmarks.noisy_neighbour --requests 5 --results-dir /tmp/nn   # a smoke run

Starts maas on a private Ray (the generator, classifier, tokenizer and ingress sections of
cluster/maas-cpu.yaml, its fair-share defaults, API keys on) with keys ``a`` and ``b``. Key b
sends short chats (16 tokens, greedy, ``ignore_eos``) and classifications (one text), one at a
time, first alone (*quiet*), then while key a floods (*flood*): the largest streamed
``/v1/completions`` the default request budget admits (64 prompts x ``n`` 2 x ``max_tokens`` 512,
``ignore_eos``: 128 sequences and 65,536 tokens, both budget bounds) and 32 concurrent streamed
long chats (512 tokens, ``ignore_eos``); a refused request of a is sent again after its
``Retry-After``. It reports b's median and p95 latency per kind, quiet and during the flood, and
their ratio (the goal: p95 during the flood at most 3x quiet), and what a got meanwhile: tokens/s
received (the text of each of its sequences re-tokenized), requests answered and refused. The
run ends by itself: a's connections are closed (which aborts its generations) once b is done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/noisy_neighbour.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report  # noqa: E402
from benchmarks.settings import CLASSIFIER_MODEL, RESULTS_DIR, SERVED_MODEL  # noqa: E402
from benchmarks.systems import (  # noqa: E402
    BASE_ENV,
    PYTHON,
    RunningSystem,
    SystemSpec,
    _ray_temp_dir,
    free_port,
    maas_serve_env,
)

GOAL_RATIO = 3.0
"""b's p95 latency during the flood over quiet: the goal is at most this."""


@dataclass(frozen=True)
class NoisySettings:
    """The workloads of one run (recorded in the results)."""

    requests: int = 30
    """b's requests of each kind in each phase."""
    b_chat_tokens: int = 16
    giant_prompts: int = 64
    giant_n: int = 2
    giant_max_tokens: int = 512
    a_chats: int = 32
    a_chat_tokens: int = 512
    settle_s: float = 20.0
    """After the flood starts, before b measures: a's first waves are running."""
    max_flood_s: float = 300.0
    """b stops measuring after this long in the flood, however many it has sent."""
    startup_timeout_s: float = 600.0


# ----------------------------------------------------------------------------- the service


def app_args(classifier_dir: str, keys_file: str) -> dict[str, Any]:
    """cluster/maas-cpu.yaml's generator, classifier, tokenizer and ingress, with API keys."""
    from benchmarks.ray_apps import default_app_args

    args = default_app_args()
    classifier = args["classifier"]
    classifier["models"] = [{"name": CLASSIFIER_MODEL, "path": classifier_dir}]
    ingress = {**args["ingress"], "api_keys_file": keys_file}
    return {"generators": args["generators"], "classifier": classifier, "tokenizer": args["tokenizer"],
            "ingress": ingress}


def serve(argv: list[str]) -> int:
    """The ``serve`` subcommand: run the application until a signal (a subprocess of the run)."""
    from benchmarks.ray_apps import maas_app, serve_until_signal

    parser = argparse.ArgumentParser(prog="python -m benchmarks.noisy_neighbour serve")
    for flag in ("--port", "--classifier-dir", "--keys-file", "--ray-temp-dir"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    serve_until_signal(lambda: maas_app(app_args(args.classifier_dir, args.keys_file)), int(args.port),
                       args.ray_temp_dir)
    return 0


def add_keys(path: Path) -> dict[str, str]:
    """Keys a and b with the default limits (their secrets are not printed)."""
    from maas.edge import key_file

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return {name: key_file.add_key(path, name) for name in ("a", "b")}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# ----------------------------------------------------------------------------- key b


@dataclass
class Latencies:
    """One kind of b's requests in one phase."""

    seconds: list[float] = field(default_factory=list)
    failed: int = 0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)
        p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else None
        return {"count": len(ordered), "failed": self.failed,
                "median_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
                "p95_ms": round(p95 * 1000, 1) if p95 is not None else None}


def b_requests(settings: NoisySettings) -> dict[str, tuple[str, dict[str, Any]]]:
    chat = {"model": SERVED_MODEL, "max_tokens": settings.b_chat_tokens, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Name three colours."}]}
    return {"chat": ("/v1/chat/completions", chat),
            "classify": ("/v1/classify", {"model": CLASSIFIER_MODEL, "input": "The train is late again."})}


def measure_b(base: str, secret: str, settings: NoisySettings, count: int, deadline: float) -> dict[str, Latencies]:
    """``count`` requests of each kind, alternating, one at a time (until ``deadline``)."""
    import httpx

    out = {kind: Latencies() for kind in b_requests(settings)}
    with httpx.Client(base_url=base, headers=bearer(secret), timeout=600) as http:
        for _ in range(count):
            for kind, (path, body) in b_requests(settings).items():
                if time.monotonic() > deadline:
                    return out
                start = time.perf_counter()
                response = http.post(path, json=body)
                if response.status_code == 200:
                    out[kind].seconds.append(time.perf_counter() - start)
                else:
                    out[kind].failed += 1
    return out


def wait_ready(base: str, secret: str, settings: NoisySettings, timeout_s: float) -> None:
    """Until one request of each kind of b's is answered (the replicas start at different times)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(lat.failed == 0 for lat in measure_b(base, secret, settings, 1, deadline).values()):
            return
        time.sleep(2)
    raise TimeoutError(f"b's requests not all answered after {timeout_s:.0f}s")


# ----------------------------------------------------------------------------- key a


@dataclass
class FloodCounts:
    giant_statuses: list[int] = field(default_factory=list)
    giant_first_event_s: float | None = None
    chat_statuses: dict[str, int] = field(default_factory=dict)
    chats_finished: int = 0
    refused_codes: dict[str, int] = field(default_factory=dict)


class Flood:
    """Key a's flood, on an event loop of its own thread (aiohttp), until :meth:`stop`."""

    def __init__(self, base: str, secret: str, settings: NoisySettings) -> None:
        self.base, self.secret, self.settings = base, secret, settings
        self.counts = FloodCounts()
        self.texts: dict[str, list[str]] = {}
        self._started = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._thread.start()

    def snapshot(self) -> dict[str, str]:
        """The text received so far, per sequence."""
        return {seq: "".join(list(parts)) for seq, parts in list(self.texts.items())}

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=120)

    async def _main(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=bearer(self.secret)) as http:
            tasks = [asyncio.ensure_future(self._giant(http))]
            tasks += [asyncio.ensure_future(self._chats(http, i)) for i in range(self.settings.a_chats)]
            await self._stopping.wait()
            for task in tasks:
                task.cancel()  # closes a's connections: the service aborts their generations
            await asyncio.gather(*tasks, return_exceptions=True)

    def _giant_body(self) -> dict[str, Any]:
        s = self.settings
        return {"model": SERVED_MODEL, "prompt": [f"Tell a long story about ship number {i}." for i in range(s.giant_prompts)],
                "n": s.giant_n, "max_tokens": s.giant_max_tokens, "ignore_eos": True, "stream": True}

    def _chat_body(self, i: int) -> dict[str, Any]:
        return {"model": SERVED_MODEL, "max_tokens": self.settings.a_chat_tokens, "ignore_eos": True, "stream": True,
                "messages": [{"role": "user", "content": f"Write a long essay about harbour number {i}."}]}

    async def _giant(self, http: Any) -> None:
        attempt = 0
        while True:
            attempt += 1
            status = await self._stream(http, "/v1/completions", self._giant_body(), f"giant{attempt}")
            self.counts.giant_statuses.append(status)
            if status == 200:
                return

    async def _chats(self, http: Any, worker: int) -> None:
        for attempt in range(1_000_000):
            status = await self._stream(http, "/v1/chat/completions", self._chat_body(worker), f"chat{worker}.{attempt}")
            self.counts.chat_statuses[str(status)] = self.counts.chat_statuses.get(str(status), 0) + 1
            self.counts.chats_finished += status == 200

    async def _stream(self, http: Any, path: str, body: dict[str, Any], name: str) -> int:
        """One streamed request; its text per choice goes to :attr:`texts`. A refusal sleeps its
        ``Retry-After`` before returning its status (0: the connection failed)."""
        try:
            async with http.post(self.base + path, json=body) as response:
                if response.status != 200:
                    self._refused(await response.text())
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    return response.status
                async for line in response.content:
                    self._take(line, name)
                return 200
        except Exception as exc:  # noqa: BLE001 - a connection that failed: counted, tried again
            self._refused(json.dumps({"error": {"code": type(exc).__name__}}))
            await asyncio.sleep(1)
            return 0

    def _refused(self, text: str) -> None:
        try:
            code = str(json.loads(text)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = "not-json"
        self.counts.refused_codes[code] = self.counts.refused_codes.get(code, 0) + 1

    def _take(self, line: bytes, name: str) -> None:
        text = line.decode().strip()
        if not text.startswith("data: {"):
            return
        if name.startswith("giant") and self.counts.giant_first_event_s is None:
            self.counts.giant_first_event_s = round(time.monotonic() - self._started, 1)
        for choice in json.loads(text[6:]).get("choices", []):
            piece = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            self.texts.setdefault(f"{name}/{choice['index']}", []).append(piece)


def tokens_between(model_dir: Path, before: dict[str, str], after: dict[str, str]) -> int:
    """Tokens a received between two snapshots (its text re-tokenized per sequence)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    count = 0
    for seq, text in after.items():
        count += len(tokenizer.encode(text, add_special_tokens=False))
        count -= len(tokenizer.encode(before.get(seq, ""), add_special_tokens=False))
    return count


# ----------------------------------------------------------------------------- the run


def run(settings: NoisySettings, results_dir: Path, command: str) -> dict[str, Any]:
    from benchmarks.run import classifier_dir, generator_dir, log

    work = Path(tempfile.mkdtemp(prefix="maas-noisy-"))
    model_dir = generator_dir()
    cls_dir, cls_what = classifier_dir(work)
    secrets = add_keys(work / "keys.yaml")
    port, ray_dir = free_port(), _ray_temp_dir()
    argv = [PYTHON, "-m", "benchmarks.noisy_neighbour", "serve", "--port", str(port), "--classifier-dir",
            str(cls_dir), "--keys-file", str(work / "keys.yaml"), "--ray-temp-dir", ray_dir]
    env = {**BASE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1", **maas_serve_env("maas")}
    probe = {"model": CLASSIFIER_MODEL, "input": "hello"}
    spec = SystemSpec("maas-noisy", argv, port, "/v1/classify", probe, env, ray_dir, bearer(secrets["b"]))
    machine = report.describe_machine()
    log(f"noisy neighbour: starting maas on port {port} (log {work / 'maas.log'})")
    with RunningSystem(spec, work / "maas.log", settings.startup_timeout_s) as running:
        log(f"ready after {running.startup_s:.0f}s; warming up")
        wait_ready(spec.base_url, secrets["b"], settings, settings.startup_timeout_s)
        measure_b(spec.base_url, secrets["b"], settings, 3, math.inf)
        log(f"quiet: b sends {settings.requests} chats and {settings.requests} classifications")
        quiet = measure_b(spec.base_url, secrets["b"], settings, settings.requests, math.inf)
        flood = Flood(spec.base_url, secrets["a"], settings)
        flood.start()
        log(f"flood: a starts; b measures after {settings.settle_s:.0f}s")
        time.sleep(settings.settle_s)
        before, start = flood.snapshot(), time.monotonic()
        flooded = measure_b(spec.base_url, secrets["b"], settings, settings.requests, start + settings.max_flood_s)
        after, window_s = flood.snapshot(), time.monotonic() - start
        flood.stop()
        log(f"flood: b done after {window_s:.0f}s; a's connections closed")
    a_tokens = tokens_between(model_dir, before, after)
    return {
        "machine": machine, "command": command, "settings": asdict(settings),
        "classifier": cls_what, "startup_s": round(running.startup_s, 1),
        "b": {phase: {kind: lat.summary() for kind, lat in result.items()}
              for phase, result in (("quiet", quiet), ("flood", flooded))},
        "a": {"window_s": round(window_s, 1), "tokens": a_tokens, "tokens_per_s": round(a_tokens / window_s, 1),
              "sequences_streaming": len(after), **asdict(flood.counts)},
        "logs_dir": str(work),
    }


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for kind, quiet in results["b"]["quiet"].items():
        flood = results["b"]["flood"][kind]
        out[kind] = {m: (round(flood[m] / quiet[m], 2) if flood[m] and quiet[m] else None)
                     for m in ("median_ms", "p95_ms")}
    return out


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table, with what a got."""
    rows = ["| b's requests | quiet median | quiet p95 | flood median | flood p95 | p95 flood/quiet | "
            f"goal ≤ {GOAL_RATIO:g}x |", "|---|---:|---:|---:|---:|---:|---|"]
    s = results["settings"]
    names = {"chat": f"chat ({s['b_chat_tokens']} tokens)", "classify": "classify (1 text)"}
    for kind, ratio in ratios(results).items():
        quiet, flood = results["b"]["quiet"][kind], results["b"]["flood"][kind]
        exact = flood["p95_ms"] / quiet["p95_ms"] if flood["p95_ms"] and quiet["p95_ms"] else None
        met = "met" if exact is not None and exact <= GOAL_RATIO else "missed"  # not the rounded ratio
        rows.append(f"| {names[kind]} | {quiet['median_ms']} ms | {quiet['p95_ms']} ms | {flood['median_ms']} ms | "
                    f"{flood['p95_ms']} ms | {ratio['p95_ms']}x | {met} |")
    a = results["a"]
    refused = ", ".join(f"{code} {n}" for code, n in a["refused_codes"].items()) or "none"
    rows += ["", f"Key a during b's flood measurement ({a['window_s']} s): {a['tokens_per_s']} tokens/s received "
             f"({a['tokens']} tokens over {a['sequences_streaming']} sequences); giant request statuses "
             f"{a['giant_statuses']} (first event after {a['giant_first_event_s']} s); long chats answered "
             f"{a['chats_finished']}; refusals: {refused}. b's failed requests: quiet "
             f"{sum(v['failed'] for v in results['b']['quiet'].values())}, flood "
             f"{sum(v['failed'] for v in results['b']['flood'].values())}."]
    m = results["machine"]
    rows += ["", f"{report.machine_line(m)} Command: `{results['command']}`."]
    return "\n".join(rows)


def write(results: dict[str, Any], results_dir: Path) -> list[Path]:
    results["ratios"] = ratios(results)
    return report.write_results(results_dir, "noisy_neighbour", "Noisy neighbour (`python -m benchmarks.noisy_neighbour`)", results, table(results))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noisy_neighbour", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=NoisySettings.requests,
                        help="b's requests of each kind in each phase (default: %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = NoisySettings(requests=args.requests)
    command = shlex.join(["python", "-m", "benchmarks.noisy_neighbour", *argv])
    results = run(settings, args.results_dir, command)
    paths = write(results, args.results_dir)
    report.print_written(table(results), paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
