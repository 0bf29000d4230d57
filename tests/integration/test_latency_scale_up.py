"""A generator scales up because of latency (maas/serving/latency_autoscaling.py), on a local Ray
with real vLLM replicas.

The production generator deployment (``pipelines.app.generator_app``) runs as an app of its own
with a TTFT target far below what any engine gives (1 ms) and ``target_ongoing_requests`` so high
(1000) that Serve's ongoing-requests rule alone keeps one replica under the few requests sent
here. The requests make the replica report TTFTs; the policy asks for a second replica; the test
waits until it runs, and finds the policy's ``latency_up`` line in the Serve controller's log (the
rule that made the decision). Marked ``long``: it starts two vLLM engines of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maas.config import GeneratorModelConfig
from maas.protocol.chat import GenerationParams
from tests.conftest import TEST_MAX_MODEL_LEN

pytestmark = [pytest.mark.integration, pytest.mark.long]

APP = "generator-latency"
MODEL = "smollm2-latency"
DECISION_BOUND_S = 120
"""Longest the load runs before the policy must have asked for a second replica."""
START_BOUND_S = 300
"""Longest the second replica may take to run (a vLLM engine start on a busy 2-core machine)."""


def _serve_is_running() -> bool:
    import ray

    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(True))


@pytest.fixture(scope="module")
def config(smollm2_dir: Path) -> GeneratorModelConfig:
    return GeneratorModelConfig.model_validate({
        "name": MODEL, "path": str(smollm2_dir), "max_model_len": TEST_MAX_MODEL_LEN, "kv_cache_gib": 1,
        "deployment": {"num_cpus": 0.5, "health_check_timeout_s": 120, "autoscaling": {
            "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1000,
            "upscale_delay_s": 1, "downscale_delay_s": 3600, "metrics_interval_s": 1,
            "look_back_period_s": 10, "target_ttft_p95_s": 0.001, "latency_min_samples": 2}},
    })


@pytest.fixture(scope="module")
def generator(ray_cluster: str, config: GeneratorModelConfig) -> Iterator[Any]:
    from ray import serve

    from pipelines.app import generator_app

    started_here = not _serve_is_running()
    if started_here:  # handles only
        serve.start(proxy_location="Disabled")
    yield serve.run(generator_app(config), name=APP, route_prefix=None)
    serve.delete(APP)
    if started_here:
        serve.shutdown()


def replica_states() -> dict[str, int]:
    from ray import serve

    from pipelines.app import generator_deployment_name

    deployment = serve.status().applications[APP].deployments[generator_deployment_name(MODEL)]
    return {str(getattr(state, "value", state)): count for state, count in deployment.replica_states.items()}


def controller_log_lines(needle: str) -> list[str]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"  # noqa: SLF001 - the live session
    return [line for path in sorted(logs.glob("controller_*.log"))
            for line in path.read_text(errors="replace").splitlines() if needle in line]


def latency_decisions() -> list[str]:
    return controller_log_lines(f"maas latency autoscaling of generator-{MODEL}: rule latency_up")


def test_latency_over_target_adds_a_replica(generator: Any, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    assert sum(replica_states().values()) == 1
    prompt = AutoTokenizer.from_pretrained(str(smollm2_dir))("Tell me about the sea.")["input_ids"]
    params = GenerationParams(temperature=0.0, max_tokens=8)
    sent, deadline = 0, time.monotonic() + DECISION_BOUND_S
    while not latency_decisions() and time.monotonic() < deadline:  # 2 requests at a time
        calls = [generator.generate.remote(prompt, params) for _ in range(2)]
        assert all(c.result(timeout_s=120).completion_tokens == 8 for c in calls)
        sent += 2
    decisions = latency_decisions()
    assert decisions, f"no latency_up decision after {sent} requests; states {replica_states()}"
    print(f"\n{sent} requests; decision: {decisions[0].split('maas latency autoscaling')[-1]}")
    deadline = time.monotonic() + START_BOUND_S
    while replica_states().get("RUNNING", 0) < 2 and time.monotonic() < deadline:
        time.sleep(2)
    assert replica_states().get("RUNNING", 0) == 2, replica_states()
    assert not controller_log_lines(f"generator-{MODEL}: rule ongoing_requests -> 2")
    result = generator.generate.remote(prompt, params).result(timeout_s=120)
    assert result.completion_tokens == 8
