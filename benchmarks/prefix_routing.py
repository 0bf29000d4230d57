"""Cache-aware routing against Serve's default router: multi-turn chats on 2 generator replicas.

::

    python -m benchmarks.prefix_routing            # about 9 minutes → benchmarks/results/
    python -m benchmarks.prefix_routing --conversations 4 --turns 3 --results-dir /tmp/pr   # smoke run

Starts maas twice on a private Ray, each time the generator (SmolLM2-135M, vLLM CPU) with 2
replicas, tokenizer and ingress: first with Serve's default router (power of two choices), then
with ``prefix_routing`` on. The replicas start one at a time (a second vLLM start on the same cores
while the first loads has hung here): the app is deployed with 1 generator replica, then scaled
to 2. On a 2-core machine each engine runs one OpenMP thread, unbound (``cpu_threads_bind:
nobind``, ``OMP_NUM_THREADS=1``), so the two engines do not pin their threads to the same core.

The workload, the same in each arm: ``conversations`` chats, ``concurrency`` of them at a time,
each the same system prompt (about 170 tokens) and then ``turns`` turns; a turn sends the whole
history plus a new user message (about 125 tokens) and streams a greedy answer of ``max_tokens``
tokens (``ignore_eos``), which joins the history; the user pauses ``think_s`` before the next turn.
It reports the time to the first token (client
side, streamed) median and p95, and vLLM's prefix-cache hit rate (its own counters: prompt tokens
found in the cache / looked up, ``cache_stats: true`` in both arms, read from ``/metrics``), and the
ratios to the default router. With ``--sessions`` the prefix-routed app then runs a third arm:
other conversations of the same shape sent with an ``x-session-id`` header each (its replicas
have the system prompt cached already, as the default arm's have after its first requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.settings import RESULTS_DIR, SERVED_MODEL, EngineSettings
from benchmarks.systems import (
    BASE_ENV,
    PYTHON,
    RunningSystem,
    SystemSpec,
    _ray_temp_dir,
    free_port,
    maas_serve_env,
)

GOAL_P50_RATIO = 0.7
"""Cache-aware TTFT p50 over the default router's: the goal is at most this."""
WORDS = ("harbour ledger invoice cargo vessel customs tariff freight manifest berth crane pallet "
         "container inspection permit quota broker shipment delay storage insurance route").split()


@dataclass(frozen=True)
class Workload:
    """One arm's chats (recorded in the results)."""

    conversations: int = 6
    turns: int = 6
    concurrency: int = 4
    max_tokens: int = 16
    user_words: int = 100
    system_sentences: int = 8
    seed: int = 0
    think_s: float = 1.0
    """A user's pause before the next turn (0.5 to 1.5 times this, seeded). Without it the client
    is a closed loop: the replica that just answered a turn has just freed a slot, so Serve's
    default router (the shorter queue of two) tends to pick it again for the next turn."""
    sessions: bool = False
    """Also run the third arm (``x-session-id``) on the prefix-routed app."""


def system_prompt(workload: Workload) -> str:
    """The shared system prompt (about 17 tokens a sentence)."""
    return " ".join(f"Rule {i}: answer the port authority's question {i} briefly, politely and in English."
                    for i in range(1, workload.system_sentences + 1))


def user_message(rng: random.Random, workload: Workload, conversation: int, turn: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(workload.user_words))
    return f"Case {conversation}-{turn}: {words}. What should I do?"


# ----------------------------------------------------------------------------- the service


def app_args(model_dir: str, router: str) -> dict[str, Any]:
    """The generator (2 replicas, one unbound OpenMP thread each), tokenizer and ingress."""
    from benchmarks.ray_apps import maas_generate_config

    args = maas_generate_config(model_dir, EngineSettings())
    generator = args["generators"][0]
    generator["deployment"] = {**generator["deployment"], "num_replicas": 2}
    generator.update(cpu_threads_bind="nobind", cache_stats=True,
                     prefix_routing={"enabled": router == "prefix"})
    return args


def with_generator_replicas(app: Any, replicas: int) -> Any:
    """The same application with the generator deployment's replica count set to ``replicas``
    (its init arguments unchanged, so Serve scales it in place)."""
    from ray.serve import Application

    deployment = app._bound_deployment

    def swap(value: Any) -> Any:
        if isinstance(value, Application):
            return with_generator_replicas(value, replicas)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return value

    options: dict[str, Any] = {"_init_args": tuple(swap(a) for a in deployment.init_args)}
    if deployment.name.startswith("generator-"):
        options["num_replicas"] = replicas
    return Application(deployment.options(**options))


def serve(argv: list[str]) -> int:
    """The ``serve`` subcommand (a subprocess of the run): 1 generator replica, then 2, then HTTP."""
    import threading

    from ray import serve as ray_serve

    from benchmarks.ray_apps import maas_app, start_private_ray

    parser = argparse.ArgumentParser(prog="python -m benchmarks.prefix_routing serve")
    for flag in ("--port", "--model-dir", "--ray-temp-dir", "--router"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    os.environ.update(EngineSettings().env())
    start_private_ray(args.ray_temp_dir)
    stop = threading.Event()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ray_serve.start(http_options={"host": "127.0.0.1", "port": int(args.port)}, proxy_location="HeadOnly")
        app = maas_app(app_args(args.model_dir, args.router))
        ray_serve.run(with_generator_replicas(app, 1), name="bench", route_prefix=None)
        print("[bench] one generator replica up; adding the second", flush=True)
        ray_serve.run(app, name="bench", route_prefix="/")
        print(f"[bench] application running on 127.0.0.1:{args.port}", flush=True)
        stop.wait()
    finally:
        ray_serve.shutdown()
        import ray

        ray.shutdown()
    return 0


# ----------------------------------------------------------------------------- the client


async def chat_turn(session: Any, base: str, messages: list[dict[str, str]], workload: Workload,
                    session_id: str | None) -> tuple[float, str]:
    """One streamed chat turn: seconds to the first content token, and the answer."""
    body = {"model": SERVED_MODEL, "messages": messages, "max_tokens": workload.max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    headers = {"x-session-id": session_id} if session_id else {}
    start = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    async with session.post(base + "/v1/chat/completions", json=body, headers=headers) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                text = (choice.get("delta") or {}).get("content") or ""
                if text and ttft is None:
                    ttft = time.perf_counter() - start
                parts.append(text)
    return (ttft if ttft is not None else time.perf_counter() - start), "".join(parts)


async def conversation(session: Any, base: str, workload: Workload, number: int, sessions: bool,
                       ttfts: list[dict[str, Any]]) -> None:
    rng = random.Random(workload.seed * 1000 + number)
    messages = [{"role": "system", "content": system_prompt(workload)}]
    for turn in range(workload.turns):
        messages.append({"role": "user", "content": user_message(rng, workload, number, turn)})
        ttft, answer = await chat_turn(session, base, messages, workload, f"chat-{number}" if sessions else None)
        ttfts.append({"conversation": number, "turn": turn, "ttft_s": ttft})
        messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(workload.think_s * rng.uniform(0.5, 1.5))


async def run_arm(base: str, workload: Workload, first: int, sessions: bool) -> list[dict[str, Any]]:
    import aiohttp

    ttfts: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(workload.concurrency)
    timeout = aiohttp.ClientTimeout(total=600)

    async def one(number: int) -> None:
        async with gate:
            await conversation(session, base, workload, number, sessions, ttfts)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(first + i) for i in range(workload.conversations)))
    return ttfts


def cache_counters(base: str) -> tuple[float, float]:
    """vLLM's prefix-cache (queries, hits) in prompt tokens, summed over the replicas."""
    import httpx

    text = httpx.get(base + "/metrics", timeout=30).text
    values = []
    for name in ("maas_prefix_cache_queries_total", "maas_prefix_cache_hits_total"):
        found = re.findall(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
        values.append(sum(float(v) for v in found))
    return values[0], values[1]


def measure(base: str, workload: Workload, first: int, sessions: bool) -> dict[str, Any]:
    """One arm: its TTFTs and the prefix-cache counts it added."""
    queries0, hits0 = cache_counters(base)
    start = time.monotonic()
    ttfts = asyncio.run(run_arm(base, workload, first, sessions))
    wall = time.monotonic() - start
    time.sleep(3)  # the replicas' last counts reach the metrics actor
    queries1, hits1 = cache_counters(base)
    values = sorted(t["ttft_s"] for t in ttfts)
    queries, hits = queries1 - queries0, hits1 - hits0
    return {"requests": len(values), "wall_s": round(wall, 1),
            "ttft_p50_ms": round(1000 * statistics.median(values)),
            "ttft_p95_ms": round(1000 * values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]),
            "cache_queries": int(queries), "cache_hits": int(hits),
            "hit_rate": round(hits / queries, 3) if queries else None, "ttfts": ttfts}


def run_app(router: str, model_dir: Path, work: Path, workload: Workload) -> dict[str, Any]:
    from benchmarks.run import log

    port, ray_dir = free_port(), _ray_temp_dir()
    argv = [PYTHON, "-m", "benchmarks.prefix_routing", "serve", "--port", str(port), "--model-dir", str(model_dir),
            "--ray-temp-dir", ray_dir, "--router", router]
    env = {**BASE_ENV, **maas_serve_env("maas"), "OMP_NUM_THREADS": "1"}
    probe = {"model": SERVED_MODEL, "prompt": "Hello", "max_tokens": 2}
    spec = SystemSpec(f"maas-{router}", argv, port, "/v1/completions", probe, env, ray_dir)
    log(f"{router} router: starting maas on port {port} (log {work / (router + '.log')})")
    arms: dict[str, Any] = {}
    with RunningSystem(spec, work / f"{router}.log", 900) as running:
        log(f"ready after {running.startup_s:.0f}s")
        arms[router] = measure(spec.base_url, workload, 0, sessions=False)
        log(f"{router}: {summary_line(arms[router])}")
        if router == "prefix" and workload.sessions:
            arms["prefix+session"] = measure(spec.base_url, workload, workload.conversations, sessions=True)
            log(f"prefix+session: {summary_line(arms['prefix+session'])}")
    for arm in arms.values():
        arm["startup_s"] = round(running.startup_s, 1)
    return arms


def summary_line(arm: dict[str, Any]) -> str:
    return (f"{arm['requests']} requests in {arm['wall_s']} s, TTFT p50 {arm['ttft_p50_ms']} ms, "
            f"p95 {arm['ttft_p95_ms']} ms, hit rate {arm['hit_rate']}")


def run(workload: Workload, command: str) -> dict[str, Any]:
    from benchmarks.run import generator_dir

    work = Path(tempfile.mkdtemp(prefix="maas-prefix-"))
    model_dir = generator_dir()
    machine = report.describe_machine()
    arms = {**run_app("default", model_dir, work, workload), **run_app("prefix", model_dir, work, workload)}
    return {"machine": machine, "command": command, "workload": asdict(workload), "arms": arms,
            "logs_dir": str(work)}


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    base = results["arms"]["default"]
    return {name: {m: round(arm[m] / base[m], 2) for m in ("ttft_p50_ms", "ttft_p95_ms")}
            for name, arm in results["arms"].items() if name != "default"}


def table(results: dict[str, Any]) -> str:
    rows = ["| router | requests | TTFT p50 | TTFT p95 | p50 / default | p95 / default | prefix-cache hit rate "
            "(vLLM) |", "|---|---:|---:|---:|---:|---:|---:|"]
    rel = ratios(results)
    for name, arm in results["arms"].items():
        r = rel.get(name, {"ttft_p50_ms": 1.0, "ttft_p95_ms": 1.0})
        rows.append(f"| {name} | {arm['requests']} | {arm['ttft_p50_ms']} ms | {arm['ttft_p95_ms']} ms | "
                    f"{r['ttft_p50_ms']}x | {r['ttft_p95_ms']}x | {arm['hit_rate']} |")
    exact = results["arms"]["prefix"]["ttft_p50_ms"] / results["arms"]["default"]["ttft_p50_ms"]
    w, m = results["workload"], results["machine"]
    rows += ["", f"Goal: cache-aware TTFT p50 at most {GOAL_P50_RATIO}x the default router's: "
             f"{'met' if exact <= GOAL_P50_RATIO else 'missed'} ({exact:.2f}x).",
             "", f"Workload: {w['conversations']} conversations per arm, {w['concurrency']} at a time, "
             f"{w['turns']} turns each, shared system prompt of {w['system_sentences']} sentences, user turns of "
             f"{w['user_words']} words, answers of {w['max_tokens']} tokens (greedy, ignore_eos), a pause of "
             f"{w.get('think_s', 0)} s (0.5-1.5x) before each next turn; 2 generator "
             "replicas (SmolLM2-135M, vLLM CPU, one unbound OpenMP thread each).",
             "", f"{report.machine_line(m)} Command: `{results['command']}`."]
    return "\n".join(rows)


def write(results: dict[str, Any], results_dir: Path) -> list[Path]:
    results["ratios"] = ratios(results)
    return report.write_results(results_dir, "prefix_routing", "Cache-aware routing (`python -m benchmarks.prefix_routing`)", results, table(results))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prefix_routing", description=__doc__.splitlines()[0])
    defaults = Workload()
    parser.add_argument("--think-s", type=float, default=defaults.think_s, help="(default: %(default)s)")
    for name in ("conversations", "turns", "concurrency", "max_tokens"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name),
                            help="(default: %(default)s)")
    parser.add_argument("--sessions", action="store_true",
                        help="also a third arm: other conversations with x-session-id (about 2 more minutes)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    workload = Workload(conversations=args.conversations, turns=args.turns, concurrency=args.concurrency,
                        max_tokens=args.max_tokens, think_s=args.think_s, sessions=args.sessions)
    command = shlex.join(["python", "-m", "benchmarks.prefix_routing", *argv])
    results = run(workload, command)
    paths = write(results, args.results_dir)
    report.print_written(table(results), paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
