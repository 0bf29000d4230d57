"""Encoder deployment: sentence embeddings with dynamic batching."""

from __future__ import annotations

from ray import serve

from deployments.encoder_base import BatchedEncoderBase
from maas.config import EncoderConfig
from maas.engines.encoders import Embedding, EmbeddingEngine, LoadedEncoder, default_device
from maas.protocol.errors import ModelNotFoundError


@serve.deployment(name="encoder")
class EncoderDeployment(BatchedEncoderBase):
    """Sentence embeddings: mean pooling, L2-normalised; every model loaded at start."""

    capability = "embeddings"
    deployment_name = "encoder"

    def __init__(self, config: EncoderConfig) -> None:
        self._setup(config, EmbeddingEngine(config.models), default_device())

    def models(self) -> list[str]:
        return list(self.engine.models)

    async def embed(self, model: str, texts: list[str]) -> list[Embedding]:
        return await self._submit(model, texts)

    async def _encoder(self, model_id: str) -> LoadedEncoder:
        if model_id not in self.engine.models:
            raise ModelNotFoundError.for_model(model_id, self.capability, list(self.engine.models))
        return self.engine.models[model_id]

    def _forward(self, encoder: LoadedEncoder, texts: list[str]) -> list[Embedding]:
        return self.engine.embed(encoder, texts)
