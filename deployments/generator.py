"""Generator deployment: one vLLM model, continuous batching, streaming, abort on disconnect."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.health import HealthCache
from maas.config import GeneratorModelConfig
from maas.edge.metrics import MetricsRecorder
from maas.endpoints.generation.assemble import merge_results
from maas.engines.generator import GeneratorEngine
from maas.engines.lora import LoraIds, check_adapter, lora_request, read_adapter
from maas.protocol.chat import GenerationParams, GenerationResult
from maas.protocol.errors import ServiceUnavailableError, log_client_errors_as_one_line
from maas.serving.first_token_watch import FirstTokenWatch
from maas.storage.registry import ModelRegistry
from maas.storage.served_adapters import ServedAdapters

DEFAULT_LATENCY_WINDOW_S = 10.0
"""Window of the TTFT p95 a replica reports when its deployment has no autoscaling config."""
MAX_LOADED_ADAPTERS = 16
"""Adapter versions one replica routes for at once (Serve's multiplexing LRU); vLLM itself keeps
``lora.max_loaded_adapters`` of them in memory and drops the least recently used."""


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

    def __init__(self, config: GeneratorModelConfig, registry_dir: str | None = None) -> None:
        self.config = config
        self.adapters = ServedAdapters([config], ModelRegistry(registry_dir))
        self.lora_ids = LoraIds()
        self.engine = GeneratorEngine(config, on_gpu=_on_gpu(config), placement_group=_placement_group())
        self.metrics = MetricsRecorder()
        self.health = HealthCache()
        scaling = config.deployment.autoscaling
        self.first_tokens = FirstTokenWatch(scaling.look_back_period_s if scaling else DEFAULT_LATENCY_WINDOW_S)
        log_client_errors_as_one_line()

    async def generate_stream(
        self, prompt_token_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[GenerationResult]:
        """Stream results; a cancelled caller aborts the engine request. The time to its first
        token counts from its arrival here (the adapter's loading included)."""
        ticket = self.first_tokens.arrived()
        try:  # aclosing: closing this stream closes the inner one at once, aborting the engine
            async with contextlib.aclosing(self._stream(prompt_token_ids, params, ticket)) as stream:
                async for result in stream:
                    yield result
        finally:
            self.first_tokens.left(ticket)

    async def _stream(
        self, prompt_token_ids: list[int], params: GenerationParams, ticket: int
    ) -> AsyncIterator[GenerationResult]:
        first = True
        last: GenerationResult | None = None
        lora = await self._request_adapter()
        try:
            async for result in self.engine.generate(prompt_token_ids, params, lora_request=lora):
                if first and result.completion_tokens:
                    self._record_ttft(self.first_tokens.first_token(ticket))
                    first = False
                last = result
                yield result
        finally:
            self._record_tokens(len(prompt_token_ids), last.completion_tokens if last else 0)
            self._record_cache_stats()

    async def generate(self, prompt_token_ids: list[int], params: GenerationParams) -> GenerationResult:
        """The whole generation as one result."""
        # aclosing: a cancelled caller (deadline, disconnect) closes the stream, aborting the engine.
        async with contextlib.aclosing(self.generate_stream(prompt_token_ids, params)) as stream:
            results = [r async for r in stream]
        return merge_results(results)

    async def _request_adapter(self) -> Any:
        """The ``LoRARequest`` of the adapter this request was routed with (Serve's multiplexed
        model id, ``name/vN``), loaded on demand; None for the base model."""
        adapter_id = serve.get_multiplexed_model_id()
        return await self._adapter(adapter_id) if adapter_id else None

    @serve.multiplexed(max_num_models_per_replica=MAX_LOADED_ADAPTERS)
    async def _adapter(self, adapter_id: str) -> Any:
        """Check an adapter version against this generator and load it into vLLM (LRU per replica)."""
        path = self.adapters.location(adapter_id)
        check_adapter(self.config, read_adapter(path))
        request = lora_request(adapter_id, self.lora_ids(adapter_id), path, self.config.name)
        await self.engine.engine.add_lora(request)
        return request

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metrics (called every ``metrics_interval_s`` when the
        deployment autoscales): this replica's TTFT p95 and samples over its window, queue wait and
        waiting requests, for the latency policy (``maas/serving/latency_autoscaling.py``). Async:
        it runs on the replica's event loop, as the requests that update the watch do."""
        return self.first_tokens.stats()

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

    def _record_cache_stats(self) -> None:
        """vLLM's prefix-cache counts since the last request ended (``cache_stats`` on)."""
        queries, hits = self.engine.cache_counts.take()
        if queries:
            labels = {"model": self.config.name}
            self.metrics.record_many([
                ("maas_prefix_cache_queries", labels, queries),
                ("maas_prefix_cache_hits", labels, hits),
            ])

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
