"""What the two Ray Train pipelines share (the classifier's, :mod:`pipelines.training.train`, and
LoRA's, :mod:`pipelines.training.lora`): the local Ray they start when none runs, the
``TorchTrainer`` run with its checkpoints and restarts, a worker's start-up, the log line, and the
command line's ``main``. The training workers import this module: what only the drivers use is
imported inside their functions."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from maas.offline import set_offline_env

if TYPE_CHECKING:
    from pydantic import BaseModel

PREFIX = "[train]"

Config = TypeVar("Config", bound="BaseModel")


class RunSettings(Protocol):
    """The fields of a training config that say how Ray Train runs it."""

    num_workers: int
    cpus_per_worker: float
    max_failures: int
    storage_path: str | None

    def registry_name(self) -> str: ...


def ensure_ray(config: RunSettings) -> bool:
    """Start a local Ray if none is initialized; return whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        needed = math.ceil(config.num_workers * config.cpus_per_worker)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False)
    return True


def fit(config: RunSettings, loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], *,
        use_gpu: bool, describe: str) -> Any:
    """Run ``loop`` on ``config.num_workers`` workers with a ``TorchTrainer`` (one checkpoint kept,
    ``max_failures`` restarts); return its ``ray.train.Result``. ``describe`` starts the log line."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from maas.storage.embedded import cache_dir

    storage = Path(config.storage_path) if config.storage_path else cache_dir() / "ray_train"
    storage.mkdir(parents=True, exist_ok=True)
    name = f"{config.registry_name()}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage.resolve()),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    log(f"{describe}checkpoints in {storage / name}")
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint (error: {result.error!r})")
    return result


def start_worker(cfg: dict[str, Any]) -> tuple[int, int]:
    """A training worker's start-up: the offline environment, quiet transformers, its torch
    threads and seed. Returns the worker's rank and the world size."""
    import ray.train
    import torch

    set_offline_env()
    silence_transformers()
    torch.set_num_threads(cfg["torch_threads"])
    torch.manual_seed(cfg["seed"])
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def budget_spent(budget: float | None, elapsed: float) -> bool:
    """Whether any rank of the worker group is past the time ``budget`` (every rank gets the same
    answer, so all stop at the same step)."""
    import torch
    import torch.distributed as dist

    spent = budget is not None and elapsed >= budget
    if not (dist.is_available() and dist.is_initialized()):
        return spent
    flag = torch.tensor([1.0 if spent else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def report_with_checkpoint(rank: int, metrics: dict[str, Any], save: Callable[[Path], None], prefix: str) -> None:
    """Report ``metrics`` to Ray Train with a checkpoint that rank 0 writes with ``save`` into a
    temporary folder named ``prefix...`` (the other ranks report none)."""
    import tempfile

    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        checkpoint = None
        if rank == 0:
            save(Path(folder))
            checkpoint = Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def rank0_print(rank: int, message: str) -> None:
    """A worker's progress line, from rank 0 only. Not print(): Ray Train patches it in workers and
    the line would show twice."""
    if rank == 0:
        sys.stdout.write(f"{PREFIX} {message}\n")
        sys.stdout.flush()


def silence_transformers() -> None:
    """Turn off transformers' load reports and progress bars (e.g. in a worker process)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def unwrap(model: Any) -> Any:
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def log(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def cli_main(parse: Callable[[Sequence[str] | None], Config], train: Callable[[Config], BaseModel],
             argv: Sequence[str] | None) -> int:
    """A training command: parse ``argv`` into a config, train, print the result as JSON (2 on a
    data or registry error)."""
    from maas.storage.registry import RegistryError
    from pipelines.training.training_data import DataError

    set_offline_env()
    config = parse(argv)
    try:
        result = train(config)
    except (DataError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.model_dump_json(indent=2))
    return 0
