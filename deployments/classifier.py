"""Classifier deployment: several sequence classifiers, versioned, with dynamic batching.

Models are loaded on demand per model id with Serve's model multiplexing (``@serve.multiplexed``:
an LRU of loaded models per replica, and requests for a model routed to replicas that have
it loaded). A model configured as ``registry:<name>`` is served as its live registry version:
the ingress resolves ``sentiment`` to ``sentiment/v2`` per request, so a rollout (the registry's
live pointer moving to another version) takes effect at the next request, without a redeploy;
requests already running finish on the version they started with.
"""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.encoder_base import BatchedEncoderBase
from maas.config import ClassifierConfig
from maas.engines.encoders import Classification, ClassifierEngine, LoadedEncoder, default_device
from maas.storage.registry import ModelRegistry
from maas.storage.served_classifiers import ServedClassifiers

MAX_LOADED_MODELS = 8
"""Models one replica keeps loaded (least recently used ones are dropped first)."""


@serve.deployment(name="classifier")
class ClassifierDeployment(BatchedEncoderBase):
    """Sequence classification: every label with its probability."""

    capability = "classification"
    deployment_name = "classifier"

    def __init__(self, config: ClassifierConfig, registry_dir: str | None = None) -> None:
        self.served = ServedClassifiers(config.models, ModelRegistry(registry_dir))
        self._setup(config, ClassifierEngine(), default_device())

    def models(self) -> list[str]:
        return self.served.names()

    async def classify(self, model_id: str, texts: list[str]) -> list[Classification]:
        """Classify with a model id from :meth:`ServedClassifiers.resolve` (e.g. ``sentiment/v2``)."""
        return await self._submit(model_id, texts)

    @serve.multiplexed(max_num_models_per_replica=MAX_LOADED_MODELS)
    async def _encoder(self, model_id: str) -> LoadedEncoder:
        config, path = self.served.location(model_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.engine.load, config, path)

    def _forward(self, encoder: LoadedEncoder, texts: list[str]) -> list[Classification]:
        return self.engine.classify(encoder, texts)

    async def ping(self) -> bool:
        """Classify a word with the live version of every served model (loading it if needed).

        Straight to the engine, not through the request batches, so health checks stay out of
        the batch metrics. A registry model with no live version yet (still training) is not
        checked: its requests get 503 ``model_not_ready`` at the ingress.
        """
        if self.health.fresh():
            return True
        loop = asyncio.get_running_loop()
        for name in self.served.ready_names():
            encoder = await self._encoder(self.served.resolve(name))
            await loop.run_in_executor(None, self.engine.classify, encoder, ["ping"])
        self.health.passed()
        return True

    async def check_health(self) -> None:
        await self.ping()
