"""Encoder deployment: sentence embeddings with dynamic batching."""

from __future__ import annotations

from ray import serve

from deployments.batched import BatchedEncoderBase
from maas.config import EncoderConfig
from maas.engines.encoders import Embedding, EmbeddingEngine


@serve.deployment(name="encoder")
class EncoderDeployment(BatchedEncoderBase):
    """Sentence embeddings: mean pooling, L2-normalised."""

    capability = "embeddings"
    deployment_name = "encoder"

    def __init__(self, config: EncoderConfig) -> None:
        self._setup(config, EmbeddingEngine(config.models))

    async def embed(self, model: str, texts: list[str]) -> list[Embedding]:
        return await self._submit(model, texts)

    def _forward(self, model: str, texts: list[str]) -> list[Embedding]:
        self._record_batch(model, len(texts))
        return self.engine.embed(model, texts)
