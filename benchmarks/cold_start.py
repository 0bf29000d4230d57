"""Cold start of each deployment kind from zero replicas, and the whole service's warm start.

    python -m benchmarks.cold_start [--kinds generator,classifier,encoder,ner,translator] [--port 8000]
    python -m benchmarks.cold_start --warm

Both start a local Ray and the ``maas`` application as ``maas serve`` does (embedded models
prepared, Ray, Serve's proxy, ``serve.run``), from ``cluster/maas-cpu.yaml``'s models, except that
the classifier serves the embedded MiniLM folder (``sentiment``), so that no training runs (a
registry classifier with no live version would start a background training on the same cores).

*Cold* (the default): every model deployment has ``autoscaling.min_replicas: 0`` and starts with
none; once ``/health`` answers, each kind in turn gets one real request (a 1-token chat, a
classification, an embedding, entities, a translation), timed to its answer, while Serve's status
is polled every 0.25 s: when the replica appeared (Serve's decision: ``STARTING``), when it ran
(``RUNNING``: process, imports, the deployment's constructor) and when the answer came (the first
call, with any lazy load). One kind at a time, so no two cold starts share the cores.

*Warm* (``--warm``): the config as it is (every deployment at one replica); from the command's
start: Ray up, ``serve.run`` called, each deployment's first replica ``RUNNING``, ``/health`` 200.

Prints a table and writes ``benchmarks/results/cold_start[_warm].json`` and ``.md`` with the
command, the CPU (model, flags that matter) and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "cluster" / "maas-cpu.yaml"
KINDS = ("generator", "classifier", "encoder", "ner", "translator")
POLL_S = 0.25


# ------------------------------------------------------------------ the config


def bench_config(zero: bool) -> Any:
    """The benchmark's AppConfig: cluster/maas-cpu.yaml with a classifier that needs no training;
    ``zero``: every model deployment at ``min_replicas: 0`` (none at the start)."""
    from maas.config import AppConfig, load_app_config

    raw = load_app_config(CONFIG).model_dump()
    raw["classifier"]["models"] = [{"name": "sentiment", "path": "embedded:all-minilm-l6-v2", "max_seq_len": 128}]
    if zero:
        parts = [*raw["generators"], raw["classifier"], raw["encoder"], raw["ner"], raw["translator"]]
        for part in parts:
            part["deployment"]["autoscaling"] = {"min_replicas": 0, "max_replicas": 1, "initial_replicas": 0,
                                                 "downscale_to_zero_delay_s": 3600}
            part["deployment"]["cold_start_timeout_s"] = 500
    return AppConfig.model_validate(raw)


def requests_of(config: Any) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Each kind's deployment, route and a real request body."""
    gen = config.generators[0]
    return {
        "generator": (gen.deployment_name(), "/v1/chat/completions",
                      {"model": gen.name, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}),
        "classifier": ("classifier", "/v1/classify", {"model": "sentiment", "input": "I love it."}),
        "encoder": ("encoder", "/v1/embeddings", {"model": config.encoder.models[0].name, "input": "a text"}),
        "ner": ("ner", "/v1/pipelines/entities", {"input": "Ada Lovelace was born in London."}),
        "translator": ("translator", "/v1/pipelines/translate",
                       {"model": config.translator.models[0].name, "input": "The garden is green.",
                        "source_language": "en", "target_language": "pt"}),
    }


# ------------------------------------------------------------------ Serve's status, polled


@dataclass
class Watcher:
    """Serve's replica states of the application, polled in a thread: when each deployment first
    had a replica (any state) and first had one RUNNING."""

    start: float
    app: str = "maas"
    first_seen: dict[str, float] = field(default_factory=dict)
    first_running: dict[str, float] = field(default_factory=dict)
    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from ray import serve

        last: dict[str, str] = {}
        while not self.stop.is_set():
            now = time.monotonic() - self.start
            app = serve.status().applications.get(self.app)
            for name, dep in (app.deployments.items() if app else []):
                states = {str(getattr(k, "value", k)): v for k, v in dep.replica_states.items()}
                text = f"{getattr(dep.status, 'value', dep.status)} {states}"
                if last.get(name) != text:
                    self.transitions.append((round(now, 2), name, text))
                    last[name] = text
                if states:
                    self.first_seen.setdefault(name, now)
                if states.get("RUNNING"):
                    self.first_running.setdefault(name, now)
            time.sleep(POLL_S)

    def forget(self, deployment: str) -> None:
        self.first_seen.pop(deployment, None)
        self.first_running.pop(deployment, None)


# ------------------------------------------------------------------ Serve's controller log

STARTED = re.compile(r"^INFO (\S+ \S+) controller \d+ -- Replica\(id='\w+', deployment='([^']+)', app='([^']+)'\) "
                     r"started successfully .* after ([\d.]+)s .* took ([\d.]+)s\.")


def controller_starts(log_dir: str | Path, app: str = "maas") -> list[dict[str, Any]]:
    """Every replica start of ``app`` in Serve's controller log: when it ran, how long from the
    controller's decision (``after``: the Ray worker process, imports, then the rest) and how long
    of that the deployment's constructor, reconfigure and first health check took."""
    rows = []
    for path in sorted(Path(log_dir, "serve").glob("controller_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            match = STARTED.match(line)
            if match and match.group(3) == app:
                total, constructor = float(match.group(4)), float(match.group(5))
                rows.append({"at": match.group(1), "deployment": match.group(2), "start_s": total,
                             "constructor_s": constructor, "before_constructor_s": round(total - constructor, 1)})
    return rows


def ray_logs() -> str:
    from maas.cli.local_ray import ray_logs_dir

    return ray_logs_dir()


# ------------------------------------------------------------------ the runs


def start_service(config: Any, port: int, watcher: Watcher) -> float:
    """Prepare, start Ray and Serve, start ``watcher``, run the app (``serve.run`` returns once
    every deployment is up); returns when Ray was up (monotonic)."""
    from ray import serve

    from maas.cli.local_ray import start_serve
    from maas.cli.serving import prepare_models
    from pipelines.app import APP_NAME, build_app
    from pipelines.training.background_training import logical_cpus

    prepare_models(config)
    start_serve("127.0.0.1", port, None, num_cpus=logical_cpus(config, [], os.cpu_count() or 1), quiet=True)
    ray_up = time.monotonic()
    threading.Thread(target=watcher.run, daemon=True).start()
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    return ray_up


def wait_health(http: httpx.Client, bound_s: float = 540) -> dict[str, Any]:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            response = http.get("/health", timeout=15)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service never became healthy")


def cold_run(kinds: list[str], port: int) -> dict[str, Any]:
    config = bench_config(zero=True)
    start = time.monotonic()
    watcher = Watcher(start)
    ray_up = start_service(config, port, watcher)
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        health = wait_health(http)
        serving_s = time.monotonic() - start
        cards = {m["id"]: m["status"] for m in http.get("/v1/models").json()["data"]}
        for kind in kinds:
            deployment, route, body = requests_of(config)[kind]
            rows.append(cold_start(http, watcher, kind, deployment, route, body))
        after = {m["id"]: m["status"] for m in http.get("/v1/models").json()["data"]}
    watcher.stop.set()
    return {"mode": "cold", "replica_starts": controller_starts(ray_logs()), "ray_up_s": ray_up - start, "healthy_s": serving_s, "health": health,
            "models_before": cards, "models_after": after, "rows": rows, "transitions": watcher.transitions}


def cold_start(http: httpx.Client, watcher: Watcher, kind: str, deployment: str, route: str,
               body: dict[str, Any]) -> dict[str, Any]:
    watcher.forget(deployment)
    sent = time.monotonic() - watcher.start
    response = http.post(route, json=body)
    answered = time.monotonic() - watcher.start
    time.sleep(2 * POLL_S)  # the watcher's next reads
    seen = watcher.first_seen.get(deployment, answered)
    running = watcher.first_running.get(deployment, answered)
    return {"kind": kind, "deployment": deployment, "status": response.status_code,
            "to_answer_s": answered - sent, "to_replica_s": seen - sent, "to_running_s": running - sent,
            "first_call_s": answered - running}


def warm_run(port: int) -> dict[str, Any]:
    config = bench_config(zero=False)
    start = time.monotonic()
    watcher = Watcher(start)
    ray_up = start_service(config, port, watcher)
    served = time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        wait_health(http)
        healthy = time.monotonic()
    watcher.stop.set()
    rows = [{"deployment": name, "running_s": at} for name, at in sorted(watcher.first_running.items(),
                                                                         key=lambda item: item[1])]
    return {"mode": "warm", "replica_starts": controller_starts(ray_logs()), "ray_up_s": ray_up - start, "serve_run_s": served - start,
            "healthy_s": healthy - start, "rows": rows, "transitions": watcher.transitions}


# ------------------------------------------------------------------ the report


def machine() -> dict[str, Any]:
    """The machine (:func:`benchmarks.report.describe_machine`) and its load average now."""
    return {**report.describe_machine(), "load_average": os.getloadavg()}


def table(result: dict[str, Any]) -> str:
    if result["mode"] == "warm":
        lines = ["| deployment | first replica RUNNING (s from the command's start) |", "|---|---|"]
        lines += [f"| {row['deployment']} | {row['running_s']:.1f} |" for row in result["rows"]]
        lines += [f"| (Ray and Serve's proxy up) | {result['ray_up_s']:.1f} |",
                  f"| (`/health` 200: the whole service) | {result['healthy_s']:.1f} |"]
        return "\n".join(lines)
    lines = ["| kind | deployment | answer | to answer (s) | to replica decided (s) | to RUNNING (s) | "
             "first call after RUNNING (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['deployment']} | {r['status']} | {r['to_answer_s']:.1f} | {r['to_replica_s']:.1f} "
              f"| {r['to_running_s']:.1f} | {r['first_call_s']:.1f} |" for r in result["rows"]]
    return "\n".join(lines)


def starts_table(starts: list[dict[str, Any]]) -> str:
    """Serve's own account of each replica start (its controller log)."""
    lines = ["| deployment | replica started after (s) | of it: constructor, reconfigure, first health check (s) | "
             "before the constructor: worker process, imports (s) |", "|---|---|---|---|"]
    lines += [f"| {r['deployment']} | {r['start_s']:.1f} | {r['constructor_s']:.1f} | {r['before_constructor_s']:.1f} |"
              for r in starts]
    return "\n".join(lines)


def write(result: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    env = result["machine_before"]
    text = [f"# {name}", "", f"Command: `{result['command']}`", "",
            f"Machine: {env['cpu_model']}, {env['cpu_cores']} cores, flags {', '.join(env['cpu_simd_flags']) or 'no AVX2'}; "
            f"load average before {env['load_average']}, after {result['machine_after']['load_average']} "
            "(the machine is shared: other work ran at the same time).", "", table(result), "",
            "Serve's controller log, per replica start:", "", starts_table(result.get("replica_starts", [])), ""]
    if result.get("note"):
        text += [f"Note: {result['note']}.", ""]
    if result["mode"] == "cold":
        text += [f"Ray up after {result['ray_up_s']:.1f} s; `/health` 200 (ingress and tokenizer only) after "
                 f"{result['healthy_s']:.1f} s, listing cold: {result['health'].get('cold')}.",
                 f"`/v1/models` before: {result['models_before']}", f"after: {result['models_after']}", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="kinds to start from zero, in order")
    parser.add_argument("--warm", action="store_true", help="the whole service's warm start instead")
    parser.add_argument("--port", type=int, default=8321)
    parser.add_argument("--name", default=None, help="results file name (default cold_start[_warm])")
    args = parser.parse_args(argv)
    from maas.cli.local_ray import ray_env

    ray_env(local_ray=True)
    before = machine()
    result = warm_run(args.port) if args.warm else cold_run([k for k in args.kinds.split(",") if k], args.port)
    result.update(command="python -m benchmarks.cold_start " + " ".join(sys.argv[1:] if argv is None else argv),
                  machine_before=before, machine_after=machine())
    print(table(result))
    write(result, args.name or ("cold_start_warm" if args.warm else "cold_start"))
    from ray import serve

    serve.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
