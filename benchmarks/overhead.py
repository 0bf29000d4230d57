"""Where one request's time and CPU go: proxy, ingress, tokenizer, model replica, engine.

::

    .venv/bin/python -m benchmarks.overhead
    .venv/bin/python -m benchmarks.overhead --env RAY_SERVE_PROXY_USE_GRPC=1

Starts the maas application once (a classifier, the SmolLM2 generator, the tokenizer and the
ingress, on a private Ray, with ``maas serve``'s Serve settings), then for ``/v1/classify``
and a streamed ``/v1/chat/completions`` at concurrency 1 and 32 sends a bounded number of
requests and, around each level, samples every process's CPU time (psutil,
:mod:`benchmarks.cpu_share`). It prints, per level: requests/s, latency p50 (chat: time to
first token, client side and as the generator measured it), and CPU milliseconds per request
in each kind of process. ``--json PATH`` writes the numbers.

CPU per request is (CPU seconds of the group during the level) / (requests of the level), so
it includes what a group spends while idle-waiting (Ray daemons' polling, the controller).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.classify_load import make_requests, percentile
from benchmarks.cpu_share import CpuAccounting
from benchmarks.settings import CLASSIFIER_MODEL, SERVED_MODEL
from benchmarks.systems import BASE_ENV, PYTHON, RunningSystem, SystemSpec, _ray_temp_dir, free_port

CHAT_PROMPTS = (
    "Name three colours of the rainbow.",
    "What is the capital of France?",
    "Give me one tip for sleeping well.",
    "Say hello in Spanish.",
)
COLUMNS = ("Serve HTTP proxy", "maas ingress replica", "maas tokenizer replica",
           "maas classifier replica", "maas generator replica", "vLLM engine", "maas metrics actor", "Serve controller",
           "Ray daemons", "Serve driver", "load generator", "other")


def app_spec(model_dir: Path, classifier_dir: Path, extra_env: dict[str, str],
             app_args: list[str]) -> SystemSpec:
    from benchmarks.systems import maas_serve_env
    from maas.engines.generator import resolve_dtype

    port = free_port()
    ray_dir = _ray_temp_dir()
    argv = [PYTHON, "-m", "benchmarks.ray_apps", "maas-overhead", "--port", str(port),
            "--model-dir", str(model_dir), "--classifier-dir", str(classifier_dir),
            "--ray-temp-dir", ray_dir, "--dtype", resolve_dtype("auto", on_gpu=False), *app_args]
    env = {**BASE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1", **maas_serve_env("maas"), **extra_env}
    return SystemSpec("maas-overhead", argv, port, "/v1/classify",
                      {"model": CLASSIFIER_MODEL, "input": "Hello there"}, env, ray_dir)


def direct_ingress_url(app_log: Path, timeout_s: float = 60) -> str:
    """With ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` the ingress replica serves HTTP on a port of
    its own (from 30000): read it from the replica's line in the application's log."""
    import re

    deadline = time.monotonic() + timeout_s
    pattern = re.compile(r"Started HTTP server on port (\d+)")  # ray/serve/_private/replica.py
    while time.monotonic() < deadline:
        match = pattern.search(app_log.read_text(errors="replace"))
        if match:
            return f"http://127.0.0.1:{match.group(1)}"
        time.sleep(1)
    raise RuntimeError("direct ingress: no HTTP port in the ingress replica's log")


async def _classify(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, float]:
    start = time.perf_counter()
    async with session.post(url + "/v1/classify", json=body) as response:
        await response.read()
        response.raise_for_status()
    return {"latency": time.perf_counter() - start}


async def _chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, float]:
    start = time.perf_counter()
    ttft = None
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if ttft is None and line.startswith(b"data: {") and b'"content"' in line:
                ttft = time.perf_counter() - start
    end = time.perf_counter() - start
    return {"latency": end, "ttft": ttft if ttft is not None else end}


def chat_bodies(count: int, max_tokens: int) -> list[dict[str, Any]]:
    return [{"model": SERVED_MODEL, "stream": True, "max_tokens": max_tokens, "temperature": 0,
             "ignore_eos": True,
             "messages": [{"role": "user", "content": CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}]}
            for i in range(count)]


async def drive(url: str, kind: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    call = _classify if kind == "classify" else _chat
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    samples: list[dict[str, float]] = []
    failures: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            try:
                samples.append(await call(session, url, body))
            except (TimeoutError, aiohttp.ClientError) as exc:
                failures.append(repr(exc))

    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await call(session, url, bodies[0])  # warm the connection
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        duration = time.perf_counter() - start
    ms = lambda key: [1000 * s[key] for s in samples if key in s]  # noqa: E731
    out = {"requests": len(samples), "failed": len(failures), "duration_s": round(duration, 2),
           "req_s": round(len(samples) / duration, 2),
           "latency_p50_ms": round(percentile(ms("latency"), 50), 1),
           "latency_mean_ms": round(statistics.fmean(ms("latency")), 1) if samples else None}
    if kind == "chat":
        out["ttft_p50_ms"] = round(percentile(ms("ttft"), 50), 1)
    return out


def generator_ttft(url: str) -> tuple[float, float]:
    """(sum, count) of the generator's own time-to-first-token histogram, from ``/metrics``."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("maas_time_to_first_token_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("maas_time_to_first_token_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def measure(url: str, kind: str, concurrency: int, count: int, max_tokens: int) -> dict[str, Any]:
    if kind == "classify":
        bodies = make_requests(CLASSIFIER_MODEL, count, seed=0)
    else:
        bodies = chat_bodies(count, max_tokens)
    before = generator_ttft(url) if kind == "chat" else None
    with CpuAccounting() as cpu:
        result = asyncio.run(drive(url, kind, bodies, concurrency))
    if before is not None:
        after = generator_ttft(url)
        n = after[1] - before[1]
        result["generator_ttft_mean_ms"] = round(1000 * (after[0] - before[0]) / n, 1) if n else None
    seconds = cpu.result()["cpu_seconds"]
    n = max(1, result["requests"] + 1)  # + the warm-up request
    result["cpu_ms_per_request"] = {k: round(1000 * v / n, 1) for k, v in seconds.items()}
    result["cpu_ms_per_request_total"] = round(1000 * sum(seconds.values()) / n, 1)
    result["idle_cpu_s"] = cpu.result()["idle_cpu_seconds"]
    return {"kind": kind, "concurrency": concurrency, **result}


HOP_PROBES: tuple[tuple[str, str, str, dict[str, Any] | None], ...] = (
    ("GET /v1/models (proxy + ingress, no downstream call)", "GET", "/v1/models", None),
    ("POST /v1/tokenize (+ one hop to the tokenizer deployment)", "POST", "/v1/tokenize",
     {"model": SERVED_MODEL, "prompt": CHAT_PROMPTS[1]}),
    ("POST /v1/completions, 1 token, not streamed (+ the generator and the engine)", "POST",
     "/v1/completions", {"model": SERVED_MODEL, "prompt": CHAT_PROMPTS[1], "max_tokens": 1, "temperature": 0}),
    ("POST /v1/completions, 1 token, streamed", "POST", "/v1/completions",
     {"model": SERVED_MODEL, "prompt": CHAT_PROMPTS[1], "max_tokens": 1, "temperature": 0, "stream": True}),
    ("POST /v1/chat/completions, 1 token, streamed", "POST", "/v1/chat/completions",
     {"model": SERVED_MODEL, "messages": [{"role": "user", "content": CHAT_PROMPTS[1]}], "max_tokens": 1,
      "temperature": 0, "stream": True}),
)


def hops(url: str, repeats: int = 20) -> list[dict[str, Any]]:
    """Sequential requests that stop at successive hops: the wall time each hop adds."""
    import httpx

    rows = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for name, method, path, body in HOP_PROBES:
            times = []
            try:
                for i in range(repeats + 2):
                    start = time.perf_counter()
                    response = client.request(method, path, json=body)
                    response.read()
                    response.raise_for_status()
                    if i >= 2:  # two warm-ups
                        times.append(1000 * (time.perf_counter() - start))
            except httpx.HTTPError as exc:
                print(f"[overhead] probe {path} failed: {exc!r}", flush=True)
                continue
            rows.append({"probe": name, "p50_ms": round(percentile(times, 50), 1),
                         "min_ms": round(min(times), 1)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    groups = [c for c in COLUMNS if any(c in r["cpu_ms_per_request"] for r in rows)]
    groups += sorted({k for r in rows for k in r["cpu_ms_per_request"]} - set(groups))
    head = ["request", "c", "req/s", "p50 ms", "TTFT p50 ms", "gen. TTFT ms", *groups, "total CPU ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["kind"], str(r["concurrency"]), f"{r['req_s']:.1f}", f"{r['latency_p50_ms']:.0f}",
                 f"{r['ttft_p50_ms']:.0f}" if "ttft_p50_ms" in r else "–",
                 f"{r['generator_ttft_mean_ms']:.0f}" if r.get("generator_ttft_mean_ms") else "–"]
        cells += [f"{r['cpu_ms_per_request'].get(g, 0.0):.1f}" for g in groups]
        cells.append(f"{r['cpu_ms_per_request_total']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the application's processes (repeatable)")
    parser.add_argument("--classify-requests", default="100,640", help="requests at c=1,c=32")
    parser.add_argument("--chat-requests", default="8,64", help="requests at c=1,c=32")
    parser.add_argument("--max-tokens", type=int, default=16, help="chat output tokens (ignore_eos)")
    parser.add_argument("--only", choices=("classify", "chat"), default=None)
    parser.add_argument("--direct-ingress", action="store_true",
                        help="RAY_SERVE_ENABLE_DIRECT_INGRESS=1 and the load straight to the ingress replica")
    parser.add_argument("--batch-wait-s", type=float, default=None,
                        help="the classifier's batch_wait_timeout_s (default: the benchmark workload's, 0.01)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    from benchmarks.run import classifier_dir, generator_dir

    extra = dict(item.split("=", 1) for item in args.env)
    if args.direct_ingress:
        extra["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    work = Path(tempfile.mkdtemp(prefix="maas-overhead-"))
    cls_dir, _ = classifier_dir(work)
    app_args = [] if args.batch_wait_s is None else ["--batch-wait-s", str(args.batch_wait_s)]
    spec = app_spec(generator_dir(), cls_dir, extra, app_args)
    print(f"[overhead] starting: {spec.command_line()}", flush=True)
    rows = []
    with RunningSystem(spec, work / "app.log", 600) as running:
        print(f"[overhead] ready after {running.startup_s:.0f}s (log {work / 'app.log'})", flush=True)
        url = direct_ingress_url(work / "app.log") if args.direct_ingress else spec.base_url
        print(f"[overhead] load to {url}", flush=True)
        plan = []
        if args.only in (None, "classify"):
            c1, c32 = (int(x) for x in args.classify_requests.split(","))
            plan += [("classify", 1, c1), ("classify", 32, c32)]
        if args.only in (None, "chat"):
            c1, c32 = (int(x) for x in args.chat_requests.split(","))
            plan += [("chat", 1, c1), ("chat", 32, c32)]
        for kind, concurrency, count in plan:
            row = measure(url, kind, concurrency, count, args.max_tokens)
            print(f"[overhead] {json.dumps(row)}", flush=True)
            rows.append(row)
        hop_rows = hops(url) if args.only is None else []
    print("\n" + table(rows) + "\n")
    if hop_rows:
        print("| probe (sequential, 20 requests) | p50 ms | min ms |\n|---|---|---|")
        for hop in hop_rows:
            print(f"| {hop['probe']} | {hop['p50_ms']:.1f} | {hop['min_ms']:.1f} |")
        print()
    print("CPU ms per request by kind of process; gen. TTFT: the generator replica's own mean "
          "time to first token (from /metrics); environment: "
          + (" ".join(f"{k}={v}" for k, v in extra.items()) or "maas serve's defaults"))
    if args.json:
        args.json.write_text(json.dumps({"env": extra, "command": " ".join(sys.argv), "rows": rows,
                                         "hops": hop_rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
