"""Multi-device generator replicas: the placement group a replica reserves (one bundle per device,
the replica actor in the first) and the vLLM arguments that run the engine across the devices."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from maas.config import GeneratorModelConfig
from maas.engines.generator import build_engine_args, build_vllm_config


def _config(**values: object) -> GeneratorModelConfig:
    return GeneratorModelConfig.model_validate({"name": "g", "path": "embedded:smollm2-135m-instruct",
                                                **values})


def test_a_single_device_replica_reserves_no_placement_group() -> None:
    options = _config().serve_options()
    assert "placement_group_bundles" not in options and "placement_group_strategy" not in options
    assert options == _config().deployment.to_serve_options()


def test_two_cpu_devices_reserve_one_bundle_each_with_the_replica_in_the_first() -> None:
    config = _config(tensor_parallel_size=2, deployment={"num_cpus": 0.5})
    options = config.serve_options()
    assert config.num_devices == 2 and not config.uses_gpus()
    assert options["placement_group_bundles"] == [{"CPU": 1.5}, {"CPU": 1.0}]
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0}


def test_gpu_devices_are_bundles_with_the_accelerator_and_the_replica_holds_no_gpu() -> None:
    config = _config(tensor_parallel_size=2, pipeline_parallel_size=2, cpus_per_device=2,
                     placement_strategy="PACK",
                     deployment={"num_cpus": 1, "num_gpus": 1, "accelerator_type": "A10G"})
    options = config.serve_options()
    device = {"CPU": 2.0, "GPU": 1, "accelerator_type:A10G": 0.001}
    assert options["placement_group_bundles"] == [{**device, "CPU": 3.0}, device, device, device]
    assert options["placement_group_strategy"] == "PACK"
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}
    assert config.uses_gpus()


def test_serve_accepts_the_options_of_a_multi_device_generator() -> None:
    from deployments.generator import GeneratorDeployment

    config = _config(tensor_parallel_size=4, deployment={"num_cpus": 1, "num_gpus": 1})
    deployment = GeneratorDeployment.options(**config.serve_options())
    replica = deployment._deployment_config, deployment._replica_config  # Serve validated them
    assert replica[1].placement_group_bundles == config.serve_options()["placement_group_bundles"]
    assert replica[1].placement_group_strategy == "STRICT_PACK"


def test_parallel_engine_kwargs_and_fractional_gpus_per_device_are_rejected() -> None:
    with pytest.raises(ValidationError, match="through the config's own fields"):
        _config(engine_kwargs={"tensor_parallel_size": 2})
    with pytest.raises(ValidationError, match="num_gpus 0"):
        _config(tensor_parallel_size=2, deployment={"num_gpus": 0.5})
    with pytest.raises(ValidationError):
        _config(tensor_parallel_size=0)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize(("on_gpu", "backend"), [(False, "mp"), (True, "ray")])
def test_engine_args_split_the_model_across_the_devices(model_dir: Path, on_gpu: bool, backend: str) -> None:
    args = build_engine_args(_config(path=str(model_dir), tensor_parallel_size=2, pipeline_parallel_size=2),
                             on_gpu=on_gpu)
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (2, 2)
    assert args.distributed_executor_backend == backend


def test_single_device_engine_args_keep_vllms_default_executor(model_dir: Path) -> None:
    args = build_engine_args(_config(path=str(model_dir)), on_gpu=False)
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (1, 1)
    assert args.distributed_executor_backend is None


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """vLLM's CPU platform writes its worker settings into os.environ; put them back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _smollm2_dir() -> Path:
    from maas.storage.embedded import model_dir

    folder = model_dir("smollm2-135m-instruct")
    if not (folder / "config.json").is_file():
        pytest.skip("SmolLM2 is not prepared (maas prepare)")
    return folder


def test_vllm_plans_one_cpu_worker_per_rank(restored_environ: None) -> None:
    """SmolLM2-135M has 9 attention heads and 3 KV heads: it splits in 3, not in 2."""
    config = _config(path=str(_smollm2_dir()), tensor_parallel_size=3, max_model_len=512)
    vllm_config = build_vllm_config(config, on_gpu=False, placement_group=object())
    parallel = vllm_config.parallel_config
    assert (parallel.world_size, parallel.tensor_parallel_size) == (3, 3)
    assert parallel.distributed_executor_backend == "mp"
    assert parallel.placement_group is None  # only Ray workers are placed in the replica's group
    assert os.environ["LOCAL_WORLD_SIZE"] == "3"  # vLLM's CPU backend: one worker per rank


def test_vllm_refuses_to_split_smollm2s_nine_heads_in_two(restored_environ: None) -> None:
    config = _config(path=str(_smollm2_dir()), tensor_parallel_size=2, max_model_len=512)
    with pytest.raises(ValueError, match=r"attention heads \(9\) must be divisible by tensor parallel size \(2\)"):
        build_vllm_config(config, on_gpu=False)


PRIORITY_CHILD = """
import os, subprocess, sys, threading
from maas.engines.generator import lower_cpu_priority

started = threading.Event()
done = threading.Event()
earlier = threading.Thread(target=lambda: (started.set(), done.wait()))
earlier.start()
started.wait()
os.setpriority(os.PRIO_PROCESS, 0, 2)  # Ray starts its workers at 15; this test's own base
lower_cpu_priority(3)
later = subprocess.run([sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
                       capture_output=True, text=True).stdout.strip()
print(os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, earlier.native_id), later)
done.set()
"""


def test_cpu_nice_increment_lowers_every_thread_and_the_engine_processes_started_after() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PRIORITY_CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "5", "5"]  # 2 + 3, the thread too (it had 0)
