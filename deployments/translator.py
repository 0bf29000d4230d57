"""Translator deployment: machine-translation models with dynamic batching across requests.

The texts of concurrent requests for the same model and language pair share one engine call
(``@serve.batch`` through :class:`BatchedEncoderBase`); each call is counted in the
``maas_model_calls`` / ``maas_batch_size`` metrics with ``model="<model>:<pair>"``.
"""

from __future__ import annotations

from ray import serve

from deployments.encoder_base import BatchedEncoderBase
from maas.config import TranslatorConfig
from maas.engines.translation import Translation, TranslatorEngine


def batch_key(model: str, pair: str) -> str:
    """The batching group (and metrics ``model`` label) of a model and pair, e.g. ``m:en-pt``."""
    return f"{model}:{pair}"


@serve.deployment(name="translator")
class TranslatorDeployment(BatchedEncoderBase):
    """Translated texts; every model is loaded at start."""

    capability = "translation"
    deployment_name = "translator"

    def __init__(self, config: TranslatorConfig) -> None:
        self._setup(config, TranslatorEngine(config))  # type: ignore[arg-type] - same batching fields

    def pairs(self) -> dict[str, list[str]]:
        """Each model's language pairs, by model name."""
        return dict(self.engine.pairs)

    async def translate(self, model: str, pair: str, texts: list[str]) -> list[Translation]:
        """The texts translated from the pair's source to its target language."""
        self.engine.check(model, pair, texts)  # before batching: never fail a shared batch
        return await self._submit(batch_key(model, pair), texts)

    async def _encoder(self, model_id: str) -> str:  # type: ignore[override]
        return model_id

    def _forward(self, encoder: str, texts: list[str]) -> list[Translation]:  # type: ignore[override]
        model, _, pair = encoder.rpartition(":")
        return self.engine.translate(model, pair, texts)
