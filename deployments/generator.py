"""Generator deployment: one vLLM model, continuous batching, streaming, abort on disconnect."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.health import HealthCache
from maas.config import GeneratorModelConfig
from maas.engines.generator import GeneratorEngine
from maas.wire.assemble import merge_results
from maas.wire.errors import ServiceUnavailableError, log_client_errors_as_one_line
from maas.wire.metrics import MetricsRecorder
from maas.wire.schemas import GenerationParams, GenerationResult


def _on_gpu(config: GeneratorModelConfig) -> bool:
    """A single-device replica holds its GPU itself; a multi-device one's GPUs are in its bundles."""
    import ray

    return bool(ray.get_gpu_ids()) or (config.num_devices > 1 and config.uses_gpus())


def _placement_group() -> Any:
    """The replica's placement group (Serve's ``placement_group_bundles``), or None."""
    from ray.util import get_current_placement_group

    return get_current_placement_group()


@serve.deployment(name="generator")
class GeneratorDeployment:
    """vLLM's ``AsyncLLM`` for one model; receives token ids, streams deltas."""

    def __init__(self, config: GeneratorModelConfig) -> None:
        self.config = config
        self.engine = GeneratorEngine(config, on_gpu=_on_gpu(config), placement_group=_placement_group())
        self.metrics = MetricsRecorder()
        self.health = HealthCache()
        log_client_errors_as_one_line()

    async def generate_stream(
        self, prompt_token_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[GenerationResult]:
        """Stream results; a cancelled caller aborts the engine request."""
        start = time.perf_counter()
        first = True
        last: GenerationResult | None = None
        try:
            async for result in self.engine.generate(prompt_token_ids, params):
                if first and result.completion_tokens:
                    self._record_ttft(time.perf_counter() - start)
                    first = False
                last = result
                yield result
        finally:
            self._record_tokens(len(prompt_token_ids), last.completion_tokens if last else 0)

    async def generate(self, prompt_token_ids: list[int], params: GenerationParams) -> GenerationResult:
        """The whole generation as one result."""
        # aclosing: a cancelled caller (deadline, disconnect) closes the stream, aborting the engine.
        async with contextlib.aclosing(self.generate_stream(prompt_token_ids, params)) as stream:
            results = [r async for r in stream]
        return merge_results(results)

    def running_requests(self) -> int:
        """Requests the engine is working on now (vLLM's unfinished count)."""
        return int(self.engine.engine.get_num_unfinished_requests())

    async def ping(self) -> bool:
        await self._check()
        return True

    async def check_health(self) -> None:
        await self._check()

    async def _check(self) -> None:
        if self.engine.is_dead():
            raise ServiceUnavailableError("The generation engine is dead.")
        if not self.health.fresh():
            await self.engine.ping()
            self.health.passed()

    def _record_ttft(self, seconds: float) -> None:
        self.metrics.record("maas_time_to_first_token_seconds", {"model": self.config.name}, seconds)

    def _record_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        labels = {"model": self.config.name}
        self.metrics.record_many([
            ("maas_prompt_tokens", labels, prompt_tokens),
            ("maas_completion_tokens", labels, completion_tokens),
        ])

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
