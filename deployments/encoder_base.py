"""Shared base of the batched transformers deployments (classifier, encoder)."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.health import EngineHealth, HealthCache
from maas.config import ClassifierConfig, EncoderConfig
from maas.edge.metrics import MetricsRecorder
from maas.engines.encoders import LoadedEncoder, set_torch_threads, use_torch_threads
from maas.protocol.errors import InvalidRequestError, log_client_errors_as_one_line
from maas.serving.request_batching import run_grouped


class BatchedEncoderBase(EngineHealth):
    """Shared logic: per-request limits, ``@serve.batch`` across requests, batch metrics.

    Subclasses say how a model id becomes a loaded model (:meth:`_encoder`) and run one
    forward pass over a group of texts of one model (:meth:`_forward`).
    """

    capability = ""
    deployment_name = ""

    def _setup(self, config: ClassifierConfig | EncoderConfig, engine: Any, device: str = "cpu") -> None:
        """Batching sized for ``device``, where the engine runs its models (``cpu`` or ``cuda``)."""
        set_torch_threads(config.batching.torch_threads)
        self.batching = config.batching
        self.pending_texts = 0  # texts of the requests in this replica, batched or waiting
        self.max_batch_size = config.batching.batch_size(device)
        self.engine = engine
        self.health = HealthCache()
        log_client_errors_as_one_line()
        self.metrics = MetricsRecorder()
        self.run_batch.set_max_batch_size(self.max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(config.batching.batch_wait_timeout_s)

    async def _encoder(self, model_id: str) -> LoadedEncoder:
        raise NotImplementedError

    async def _submit(self, model_id: str, texts: list[str]) -> list[Any]:
        if len(texts) > self.batching.max_inputs_per_request:
            raise InvalidRequestError(
                f"At most {self.batching.max_inputs_per_request} inputs per request; "
                f"got {len(texts)}.",
                "input",
            )
        encoder = await self._encoder(model_id)
        self.pending_texts += len(texts)
        try:
            return list(await asyncio.gather(*(self.run_batch((model_id, (encoder, t))) for t in texts)))
        finally:
            self.pending_texts -= len(texts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def run_batch(self, items: list[tuple[str, tuple[LoadedEncoder, str]]]) -> list[Any]:
        self.metrics.bind_loop()  # the batch's metrics, recorded in the executor, buffer here
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._run_grouped, items)

    def _run_grouped(self, items: list[tuple[str, tuple[LoadedEncoder, str]]]) -> list[Any]:
        return run_grouped(items, self._forward_group, self.max_batch_size)

    def _forward_group(self, model_id: str, inputs: list[tuple[LoadedEncoder, str]]) -> list[Any]:
        self._record_batch(model_id, len(inputs))
        # in the executor's thread: torch's thread count is applied per calling thread
        use_torch_threads(self.batching.threads_for(len(inputs), self.pending_texts))
        return self._forward(inputs[0][0], [text for _, text in inputs])

    def _forward(self, encoder: LoadedEncoder, texts: list[str]) -> list[Any]:
        raise NotImplementedError

    def _record_batch(self, model: str, size: int) -> None:
        labels = {"deployment": self.deployment_name, "model": model}
        self.metrics.record_many([("maas_model_calls", labels, 1), ("maas_batch_size", labels, size)])
