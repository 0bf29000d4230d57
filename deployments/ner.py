"""NER deployment: spaCy named-entity recognition with dynamic batching."""

from __future__ import annotations

from ray import serve

from deployments.encoder_base import BatchedEncoderBase
from maas.engines.ner import NerConfig, NerEngine, NerResult
from maas.protocol.errors import ModelNotFoundError


@serve.deployment(name="ner")
class NerDeployment(BatchedEncoderBase):
    """Named entities of texts; the texts of concurrent requests share ``nlp.pipe`` calls.

    Every pipeline is loaded at start; a model's "loaded encoder" in the batching base is
    simply its name, the key of :attr:`NerEngine.models`.
    """

    capability = "named-entity recognition"
    deployment_name = "ner"

    def __init__(self, config: NerConfig) -> None:
        engine = NerEngine(config.models, batch_size=config.batching.batch_size("cpu"))
        self._setup(config, engine)  # type: ignore[arg-type] - same batching/deployment fields

    def models(self) -> list[str]:
        return list(self.engine.models)

    async def entities(self, model: str, texts: list[str]) -> list[NerResult]:
        """The entities (and token count) of each text; too-long texts are a 400 up front."""
        await self._encoder(model)
        self.engine.check_lengths(model, texts)  # before batching: never fail a shared batch
        return await self._submit(model, texts)

    def engine_calls(self) -> int:
        """How many ``nlp.pipe`` batches this replica has run (batching is visible here)."""
        return self.engine.forward_calls

    async def _encoder(self, model_id: str) -> str:  # type: ignore[override]
        if model_id not in self.engine.models:
            raise ModelNotFoundError.for_model(model_id, self.capability, list(self.engine.models))
        return model_id

    def _forward(self, encoder: str, texts: list[str]) -> list[NerResult]:  # type: ignore[override]
        return self.engine.analyze(encoder, texts)
