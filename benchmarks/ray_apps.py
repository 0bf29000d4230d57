"""Serve one Ray-based system (maas or Ray Serve LLM) in this process, on a private local Ray.

Run by :mod:`benchmarks.systems` as a subprocess::

    python -m benchmarks.ray_apps maas-generate --port P --model-dir DIR
    python -m benchmarks.ray_apps maas-classify --port P --model-dir DIR --max-batch-size 32
    python -m benchmarks.ray_apps rayllm --port P --model-dir DIR

Each starts its own Ray (``address="local"``, no dashboard, 8 logical CPUs, a private temp
folder), runs the application on 127.0.0.1:P and, on SIGTERM or SIGINT, shuts Serve and Ray
down so that nothing outlives it.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.settings import (
    CLASSIFIER_MODEL,
    MAAS_STREAM_INTERVAL,
    RAY_NUM_CPUS,
    SERVED_MODEL,
    ClassifyWorkload,
    EngineSettings,
)
from maas.offline import set_offline_env

set_offline_env()
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def maas_generate_config(model_dir: str, engine: EngineSettings,
                         stream_interval: int = MAAS_STREAM_INTERVAL) -> dict[str, Any]:
    """maas ``AppConfig`` args: only the generator (as in cluster/maas-cpu.yaml) + tokenizer/ingress."""
    return {
        "generators": [{
            "name": SERVED_MODEL, "path": model_dir, "dtype": engine.dtype,
            "max_model_len": engine.max_model_len, "max_num_seqs": engine.max_num_seqs,
            "kv_cache_gib": engine.kv_cache_gib, "enforce_eager": engine.enforce_eager,
            "max_tokens_limit": engine.max_model_len, "stream_interval": stream_interval,
            "deployment": {"num_cpus": 0.5, "max_ongoing_requests": 64},
        }],
        "tokenizer": {"deployment": {"num_cpus": 0.1, "max_ongoing_requests": 256}},
        "ingress": {"deployment": {"num_cpus": 0.1, "max_ongoing_requests": 256}},
    }


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "cluster" / "maas-cpu.yaml"


def default_app_args() -> dict[str, Any]:
    """The ``args`` of the maas application in the default config (cluster/maas-cpu.yaml)."""
    import yaml

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return next(app for app in config["applications"] if app["name"] == "maas")["args"]


def maas_classify_config(model_dir: str, max_batch_size: int, workload: ClassifyWorkload,
                         quantize: str = "none", torch_threads: int | None = None,
                         replicas: int | None = None, low_load_threads: int | None = None) -> dict[str, Any]:
    """maas ``AppConfig`` args: the classifier, tokenizer and ingress sections of the default
    config (cluster/maas-cpu.yaml) serving the benchmark's model, with a variant's overrides."""
    defaults = copy.deepcopy(default_app_args())
    classifier = defaults["classifier"]
    classifier["models"] = [{"name": CLASSIFIER_MODEL, "path": model_dir, "max_seq_len": workload.max_seq_len,
                             "quantize": quantize}]
    classifier["batching"].update(max_batch_size=max_batch_size,
                                  batch_wait_timeout_s=workload.batch_wait_timeout_s)
    if torch_threads is not None:
        classifier["batching"]["torch_threads"] = torch_threads
    if low_load_threads is not None:
        classifier["batching"]["low_load_torch_threads"] = low_load_threads
    if replicas is not None:
        classifier["deployment"]["num_replicas"] = replicas
    return {"classifier": classifier, "tokenizer": defaults["tokenizer"], "ingress": defaults["ingress"]}


def maas_overhead_config(model_dir: str, classifier_dir: str, engine: EngineSettings,
                         workload: ClassifyWorkload) -> dict[str, Any]:
    """Both of the above in one application (for :mod:`benchmarks.overhead`)."""
    config = maas_generate_config(model_dir, engine)
    config["classifier"] = maas_classify_config(classifier_dir, 32, workload)["classifier"]
    return config


def maas_app(args: dict[str, Any]) -> Any:
    """The production maas graph for the given ``AppConfig`` args."""
    from maas.config import AppConfig
    from pipelines.app import build_app

    return build_app(AppConfig.model_validate(args))


def rayllm_app(model_dir: str, engine: EngineSettings) -> Any:
    """Ray Serve LLM's OpenAI app for the same model and engine settings."""
    from ray.serve.llm import LLMConfig, build_openai_app

    config = LLMConfig(
        model_loading_config={"model_id": SERVED_MODEL, "model_source": model_dir},
        engine_kwargs={"dtype": engine.dtype, "max_model_len": engine.max_model_len,
                       "enforce_eager": engine.enforce_eager, "max_num_seqs": engine.max_num_seqs},
        placement_group_config={"bundles": [{"CPU": 1}]},
        runtime_env={"env_vars": engine.env()},
    )
    return build_openai_app({"llm_configs": [config]})


def start_private_ray(temp_dir: str, attempts: int = 3) -> None:
    """``ray.init`` a private local Ray; retried, since a busy machine can miss its 30 s start limit."""
    import ray

    from benchmarks.systems import kill_matching

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", include_dashboard=False, num_cpus=RAY_NUM_CPUS,
                     _temp_dir=temp_dir, _node_ip_address="127.0.0.1", namespace="serve")
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on a slow start
            print(f"[bench] Ray start attempt {attempt} failed: {exc}", flush=True)
            ray.shutdown()
            kill_matching(temp_dir)  # the half-started GCS/raylet of this attempt
            if attempt == attempts:
                raise


def serve_until_signal(build: Callable[[], Any], port: int, temp_dir: str) -> None:
    """Start a private Ray and Serve on 127.0.0.1:port, run ``build()``, stop all on a signal.

    The application is built after ``ray.init``: Ray Serve LLM's builder would otherwise start
    a default Ray of its own.
    """
    import ray
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    start_private_ray(temp_dir)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        serve.run(build(), name="bench", route_prefix="/", blocking=False)
        print(f"[bench] application running on 127.0.0.1:{port}", flush=True)
        stop.wait()
    finally:
        print("[bench] shutting down Serve and Ray", flush=True)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["maas-generate", "maas-classify", "maas-overhead", "rayllm"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--batch-wait-s", type=float, default=None,
                        help="classifier batch_wait_timeout_s (default: the workload's)")
    parser.add_argument("--classifier-dir", default=None, help="maas-overhead: the classifier")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--quantize", default="none", choices=("none", "int8"), help="classifier")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="classifier torch threads (default: cluster/maas-cpu.yaml's)")
    parser.add_argument("--low-load-threads", type=int, default=None,
                        help="classifier torch threads for a lone request (default: the cores)")
    parser.add_argument("--replicas", type=int, default=None,
                        help="classifier replicas (default: cluster/maas-cpu.yaml's)")
    parser.add_argument("--dtype", default=None, help="generator dtype (default: the shared setting)")
    parser.add_argument("--stream-interval", type=int, default=MAAS_STREAM_INTERVAL,
                        help="maas generator: tokens per streamed chunk")
    parser.add_argument("--ray-temp-dir", required=True, help="private Ray temp folder (short path)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    engine = EngineSettings(**({"dtype": args.dtype} if args.dtype else {}))
    os.environ.update(engine.env())
    workload = ClassifyWorkload(**({} if args.batch_wait_s is None else {"batch_wait_timeout_s": args.batch_wait_s}))
    builders: dict[str, Callable[[], Any]] = {
        "maas-generate": lambda: maas_app(
            maas_generate_config(args.model_dir, engine, args.stream_interval)),
        "maas-classify": lambda: maas_app(
            maas_classify_config(args.model_dir, args.max_batch_size, workload, args.quantize,
                                 args.torch_threads, args.replicas, args.low_load_threads)),
        "maas-overhead": lambda: maas_app(
            maas_overhead_config(args.model_dir, args.classifier_dir, engine, workload)),
        "rayllm": lambda: rayllm_app(args.model_dir, engine),
    }
    serve_until_signal(builders[args.system], args.port, args.ray_temp_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
