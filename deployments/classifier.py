"""Classifier deployment: transformers sequence classification with dynamic batching."""

from __future__ import annotations

from ray import serve

from deployments.batched import BatchedEncoderBase
from maas.config import ClassifierConfig
from maas.engines.encoders import Classification, ClassifierEngine


@serve.deployment(name="classifier")
class ClassifierDeployment(BatchedEncoderBase):
    """Sequence classification: every label with its probability."""

    capability = "classification"
    deployment_name = "classifier"

    def __init__(self, config: ClassifierConfig) -> None:
        self._setup(config, ClassifierEngine(config.models))

    async def classify(self, model: str, texts: list[str]) -> list[Classification]:
        return await self._submit(model, texts)

    def _forward(self, model: str, texts: list[str]) -> list[Classification]:
        self._record_batch(model, len(texts))
        return self.engine.classify(model, texts)
