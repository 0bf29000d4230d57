"""A generator replica on several devices: vLLM's CPU backend splits SmolLM2 across worker
processes inside one Serve replica, which reserves a bundle per device, and greedy output
equals vLLM's on one device.

SmolLM2-135M has 9 attention heads and 3 KV heads, so vLLM can split it in 3 ways, not in 2
(tests/unit/test_generator_devices.py). On a machine with one NUMA node the workers' threads
are not pinned (``cpu_threads_bind: nobind``): vLLM's automatic pinning wants a NUMA node per
worker. Three workers on two cores are slow; the test checks equality, not speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maas.config import GeneratorModelConfig
from maas.protocol.chat import GenerationParams
from tests.conftest import TEST_MAX_MODEL_LEN
from tests.integration.offline import MAX_TOKENS, completion
from tests.integration.offline import TENSOR_PARALLEL_PROMPTS as PROMPTS

pytestmark = [pytest.mark.integration, pytest.mark.long]

DEVICES = 3
APP = "generator-tp"


def _serve_is_running() -> bool:
    import ray

    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(True))


@pytest.fixture(scope="module")
def config(smollm2_dir: Path) -> GeneratorModelConfig:
    return GeneratorModelConfig.model_validate({
        "name": "smollm2-tp", "path": str(smollm2_dir), "max_model_len": TEST_MAX_MODEL_LEN,
        "kv_cache_gib": 1, "tensor_parallel_size": DEVICES, "cpus_per_device": 0.5,
        "cpu_threads_bind": "nobind",
        "deployment": {"num_cpus": 0.2, "health_check_timeout_s": 120},
    })


@pytest.fixture(scope="module")
def generator(ray_cluster: str, config: GeneratorModelConfig) -> Iterator[Any]:
    """The production generator deployment (``pipelines.app.generator_app``), through its handle."""
    from ray import serve

    from pipelines.app import generator_app

    started_here = not _serve_is_running()
    if started_here:  # handles only; leaves HTTP options to whoever starts Serve for real
        serve.start(proxy_location="Disabled")
    yield serve.run(generator_app(config), name=APP, route_prefix=None)
    serve.delete(APP)
    if started_here:
        serve.shutdown()


def test_the_replica_holds_one_bundle_per_device(generator: Any, config: GeneratorModelConfig) -> None:
    import ray

    expected = config.serve_options()["placement_group_bundles"]
    groups = [g for g in ray.util.placement_group_table().values()
              if g["state"] == "CREATED" and len(g["bundles"]) == DEVICES]
    assert [list(g["bundles"].values()) for g in groups] == [expected]
    assert groups[0]["strategy"] == "STRICT_PACK"


def test_greedy_output_on_three_devices_equals_one_device(generator: Any, offline_reference: dict,
                                                          smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    params = GenerationParams(temperature=0.0, max_tokens=MAX_TOKENS)
    for prompt in PROMPTS:
        expected = completion(offline_reference, prompt)  # vLLM offline on one device
        prompt_ids = tokenizer(prompt)["input_ids"]
        assert len(prompt_ids) == expected["prompt_tokens"]
        result = generator.generate.remote(prompt_ids, params).result(timeout_s=300)
        assert result.chunks[0].token_ids == expected["token_ids"]
        assert result.chunks[0].text == expected["text"]


def test_the_multi_device_replica_passes_its_health_probe(generator: Any) -> None:
    assert generator.ping.remote().result(timeout_s=120) is True
    assert generator.running_requests.remote().result(timeout_s=60) == 0
