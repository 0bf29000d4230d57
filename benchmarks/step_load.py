"""A step load on a generator: the latency autoscaling policy against the ongoing-requests rule.

::

    python -m benchmarks.step_load                  # about 15 minutes → benchmarks/results/
    python -m benchmarks.step_load --phases 20:1,60:4,30:1 --results-dir /tmp/sl   # smoke run

A local multi-node Ray (``ray.cluster_utils.Cluster``: a head with no CPUs for Serve's controller
and this driver, and two worker nodes of one CPU each) runs the production generator deployment
(``pipelines.app.generator_app``, SmolLM2-135M on vLLM's CPU backend) with one CPU per replica,
so a second replica lands on the second node. Each engine runs one OpenMP thread, unbound
(``cpu_threads_bind: nobind``, ``OMP_NUM_THREADS=1``): on a 2-core machine a second replica is a
second core's worth of compute.

Two arms, one after the other, on the same cluster and load, each starting from 1 replica
(``max_replicas`` 2):

* ``ongoing``: Serve's ongoing-requests rule alone, ``target_ongoing_requests`` 4;
* ``latency``: the same and maas's latency policy (``target_ttft_p95_s``,
  ``maas/serving/latency_autoscaling.py``).

The load steps from quiet to 4x and back (``--phases``, seconds:clients): each client sends one
streamed greedy request after the other (``max_tokens`` tokens, ``ignore_eos``) through a Serve
handle and times its first token. Every second the driver reads the running replicas from
``serve.status()``. The table gives each phase's TTFT p50/p95 and the replicas; the plot
(``step_load.png``) the p95 TTFT over a sliding window and the replica count over time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.settings import RESULTS_DIR

APP = "step-load"
MODEL = "smollm2-step"
ARMS = ("ongoing", "latency")
WINDOW_S = 10.0
"""Sliding window of the plotted p95 TTFT (the policy's own ``look_back_period_s``)."""
PROMPT = ("Write a short note to a colleague about the shipment of containers that arrived late at "
          "the harbour this morning, the customs inspection, and what we should tell the client.")


@dataclass(frozen=True)
class StepLoad:
    phases: tuple[tuple[float, int], ...] = ((60.0, 1), (180.0, 4), (90.0, 1))
    max_tokens: int = 32
    target_ongoing_requests: float = 4.0
    target_ttft_p95_s: float = 0.6
    """Between the client-side TTFT p95 at 1 client (about 0.4 s here) and at 4 (about 1 s); at
    1.0 the replicas' own p95 stayed under the target and neither arm scaled (2026-12-07)."""


def generator_config(model_dir: Path, arm: str, load: StepLoad) -> Any:
    from maas.config import GeneratorModelConfig

    autoscaling: dict[str, Any] = {
        "min_replicas": 1, "max_replicas": 2, "initial_replicas": 1,
        "target_ongoing_requests": load.target_ongoing_requests, "upscale_delay_s": 5,
        "downscale_delay_s": 30, "metrics_interval_s": 1, "look_back_period_s": WINDOW_S}
    if arm == "latency":
        autoscaling |= {"target_ttft_p95_s": load.target_ttft_p95_s, "latency_min_samples": 5}
    return GeneratorModelConfig.model_validate({
        "name": MODEL, "path": str(model_dir), "max_model_len": 512, "kv_cache_gib": 1,
        "max_tokens_limit": 256, "cpu_threads_bind": "nobind",
        "deployment": {"num_cpus": 1, "health_check_timeout_s": 180, "max_ongoing_requests": 32,
                       "autoscaling": autoscaling}})


def start_cluster() -> Any:
    """Head (no CPUs: Serve's controller and this driver) and two one-CPU worker nodes."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every node's workers
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    return cluster


def running_replicas(deployment: str) -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or deployment not in app.deployments:
        return 0
    states = app.deployments[deployment].replica_states
    return sum(count for state, count in states.items() if str(getattr(state, "value", state)) == "RUNNING")


async def client(handle: Any, prompt: list[int], params: Any, start: float, stop_at: float,
                 samples: list[dict[str, float]]) -> None:
    while time.monotonic() < stop_at:
        sent = time.monotonic()
        first = None
        async for _ in handle.generate_stream.options(stream=True).remote(prompt, params):
            first = first or time.monotonic()
        samples.append({"t": round(sent - start, 3), "ttft_s": round((first or time.monotonic()) - sent, 4),
                        "total_s": round(time.monotonic() - sent, 4)})


async def watch_replicas(deployment: str, start: float, done: asyncio.Event, timeline: list[list[float]]) -> None:
    while not done.is_set():
        count = await asyncio.to_thread(running_replicas, deployment)
        timeline.append([round(time.monotonic() - start, 1), count])
        await asyncio.sleep(1.0)


async def drive(handle: Any, deployment: str, prompt: list[int], load: StepLoad) -> dict[str, Any]:
    from maas.protocol.chat import GenerationParams

    params = GenerationParams(temperature=0.0, max_tokens=load.max_tokens, ignore_eos=True)
    samples: list[dict[str, float]] = []
    timeline: list[list[float]] = []
    start, done = time.monotonic(), asyncio.Event()
    watcher = asyncio.create_task(watch_replicas(deployment, start, done, timeline))
    phase_start = 0.0
    for seconds, clients in load.phases:
        stop_at = start + phase_start + seconds
        await asyncio.gather(*(client(handle, prompt, params, start, stop_at, samples) for _ in range(clients)))
        print(f"[step-load] phase {clients} client(s) done at {time.monotonic() - start:.0f} s, "
              f"{running_replicas(deployment)} replica(s)", flush=True)
        phase_start += seconds
    done.set()
    await watcher
    return {"samples": samples, "replicas": timeline}


def run_arm(arm: str, model_dir: Path, prompt: list[int], load: StepLoad) -> dict[str, Any]:
    from ray import serve

    from pipelines.app import generator_app, generator_deployment_name

    config = generator_config(model_dir, arm, load)
    began = time.monotonic()
    handle = serve.run(generator_app(config), name=APP, route_prefix=None)
    print(f"[step-load] {arm}: 1 replica running after {time.monotonic() - began:.0f} s", flush=True)
    try:
        measured = asyncio.run(drive(handle, generator_deployment_name(MODEL), prompt, load))
    finally:
        serve.delete(APP)
    return {"arm": arm, "autoscaling": config.deployment.autoscaling.model_dump(exclude_none=True),
            "phases": phase_summaries(measured, load), **measured}


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, int(share * len(ranked)))]


def phase_summaries(measured: dict[str, Any], load: StepLoad) -> list[dict[str, Any]]:
    summaries, begin = [], 0.0
    for seconds, clients in load.phases:
        end = begin + seconds
        ttfts = [s["ttft_s"] for s in measured["samples"] if begin <= s["t"] < end]
        counts = [c for t, c in measured["replicas"] if begin <= t < end]
        two = next((t - begin for t, c in measured["replicas"] if begin <= t < end and c >= 2), None)
        summaries.append({"clients": clients, "seconds": seconds, "requests": len(ttfts),
                          "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
                          "ttft_p95_s": percentile(ttfts, 0.95),
                          "replicas_at_end": counts[-1] if counts else None,
                          "second_replica_after_s": two})
        begin = end
    return summaries


def table(results: dict[str, Any]) -> str:
    rows = ["| arm | phase | requests | TTFT p50 | TTFT p95 | replicas at the end | 2 replicas running after |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for arm in results["arms"]:
        for number, phase in enumerate(arm["phases"], 1):
            ms = [("–" if phase[k] is None else f"{phase[k] * 1000:.0f} ms") for k in ("ttft_p50_s", "ttft_p95_s")]
            two = "–" if phase["second_replica_after_s"] is None else f"{phase['second_replica_after_s']:.0f} s"
            rows.append(f"| {arm['arm']} | {number}: {phase['clients']} client(s), {phase['seconds']:.0f} s | "
                        f"{phase['requests']} | {ms[0]} | {ms[1]} | {phase['replicas_at_end']} | {two} |")
    return "\n".join(rows)


def after_scale_up(results: dict[str, Any]) -> str:
    """Each arm's TTFT in the busiest phase from the moment a second replica first ran in any arm:
    the same load, one replica against two."""
    phases = results["load"]["phases"]
    busiest = max(range(len(phases)), key=lambda i: phases[i][1])
    begin = sum(seconds for seconds, _ in phases[:busiest])
    end = begin + phases[busiest][0]
    ups = [t for arm in results["arms"] for t, count in arm["replicas"] if begin <= t < end and count >= 2]
    if not ups:
        return "No arm ran a second replica during the step."
    since = min(ups)
    parts = []
    for arm in results["arms"]:
        ttfts = [s["ttft_s"] for s in arm["samples"] if since <= s["t"] < end]
        if ttfts:
            parts.append(f"{arm['arm']} p50 {statistics.median(ttfts) * 1000:.0f} ms, "
                         f"p95 {percentile(ttfts, 0.95) * 1000:.0f} ms ({len(ttfts)} requests)")
    return (f"From {since:.0f} s, when a second replica first ran, to the end of the step: "
            + "; ".join(parts) + ".")


def sliding_p95(samples: list[dict[str, float]]) -> tuple[list[float], list[float]]:
    ordered = sorted(samples, key=lambda s: s["t"])
    times, values = [], []
    for sample in ordered:
        window = [s["ttft_s"] for s in ordered if sample["t"] - WINDOW_S < s["t"] <= sample["t"]]
        times.append(sample["t"])
        values.append(percentile(window, 0.95) or 0.0)
    return times, values


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for arm in results["arms"]:
        top.plot(*sliding_p95(arm["samples"]), label=arm["arm"])
        bottom.step([t for t, _ in arm["replicas"]], [c for _, c in arm["replicas"]], where="post", label=arm["arm"])
    edge = 0.0
    for seconds, _ in results["load"]["phases"][:-1]:
        edge += seconds
        for axis in (top, bottom):
            axis.axvline(edge, color="grey", linestyle=":")
    top.axhline(results["load"]["target_ttft_p95_s"], color="red", linestyle="--", label="TTFT target")
    top.set_ylabel(f"TTFT p95 over {WINDOW_S:.0f} s (s)")
    bottom.set_ylabel("running replicas")
    bottom.set_ylim(0, 2.5)
    bottom.set_yticks([0, 1, 2])
    bottom.set_xlabel("seconds since the load began")
    top.legend()
    bottom.legend()
    top.set_title("Step load (quiet, 4x, quiet): latency policy vs ongoing-requests rule")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def run(load: StepLoad, command: str) -> dict[str, Any]:
    from ray import serve
    from transformers import AutoTokenizer

    from maas.offline import set_offline_env
    from maas.storage.embedded import prepare_smollm2

    set_offline_env()
    model_dir = prepare_smollm2()
    prompt = AutoTokenizer.from_pretrained(str(model_dir))(PROMPT)["input_ids"]
    machine = report.describe_machine()
    cluster = start_cluster()
    try:
        serve.start(proxy_location="Disabled")
        arms = [run_arm(arm, model_dir, prompt, load) for arm in ARMS]
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {"command": command, "machine": machine, "load": asdict(load), "prompt_tokens": len(prompt), "arms": arms}


def write(results: dict[str, Any], results_dir: Path) -> list[Path]:
    text = (f"{report.machine_line(results['machine'])} Command: `{results['command']}`. TTFT is timed by the "
            f"client (a Serve handle, streamed); the prompt has {results['prompt_tokens']} tokens.\n\n"
            f"{table(results)}\n\n{after_scale_up(results)}\n\n![p95 TTFT and replicas over time](step_load.png)")
    paths = report.write_results(results_dir, "step_load", "Step load: latency policy vs ongoing-requests rule",
                                 results, text)
    plot(results, results_dir / "step_load.png")
    return [*paths, results_dir / "step_load.png"]


def parse_phases(text: str) -> tuple[tuple[float, int], ...]:
    return tuple((float(seconds), int(clients)) for seconds, clients in (p.split(":") for p in text.split(",")))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    defaults = StepLoad()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_load", description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=parse_phases, default=defaults.phases,
                        help="seconds:clients,... (default: 60:1,180:4,90:1)")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="(default: %(default)s)")
    parser.add_argument("--target-ongoing-requests", type=float, default=defaults.target_ongoing_requests,
                        help="both arms (default: %(default)s)")
    parser.add_argument("--target-ttft-p95-s", type=float, default=defaults.target_ttft_p95_s,
                        help="the latency arm (default: %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    load = StepLoad(phases=args.phases, max_tokens=args.max_tokens,
                    target_ongoing_requests=args.target_ongoing_requests, target_ttft_p95_s=args.target_ttft_p95_s)
    results = run(load, shlex.join(["python", "-m", "benchmarks.step_load", *argv]))
    paths = write(results, args.results_dir)
    report.print_written(table(results), paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
