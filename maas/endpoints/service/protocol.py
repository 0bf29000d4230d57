"""The service family's protocol: the model objects of ``/v1/models``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from maas.protocol.base import WireModel, now

# ----------------------------------------------------------------------------- models


class ModelTraining(WireModel):
    """Where a registry classifier's training run stands (``maas status`` shows the same)."""

    state: Literal["training", "done", "failed"]
    phase: str = Field("", description="e.g. `queued`, `linear probe`, `fine-tune`, `evaluating`.")
    step: int | None = None
    total: int | None = None
    eta_s: float | None = Field(None, description="Estimated seconds left in this phase.")
    detail: str = Field("", description="The last result, or the error.")
    updated_at: str = ""


class ModelCard(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "maas"
    capability: Literal["generate", "classify", "embed", "entities", "translate"]
    max_model_len: int | None = None
    version: str | None = Field(None, description="Live registry version (classifiers from the registry).")
    status: Literal["ready", "training", "failed", "not_trained"] = Field(
        "ready",
        description="`ready`: answers now. A registry classifier with no live version is "
        "`training` (its requests get 503 `model_not_ready` with `Retry-After`), `failed`, or "
        "`not_trained` (train it with `maas train`).",
    )
    training: ModelTraining | None = Field(
        None, description="A training run of this model in progress or ended (registry classifiers)."
    )
    pairs: list[str] | None = Field(None, description="Language pairs, e.g. `en-pt` (translation models).")
    parent: str | None = Field(None, description="The base model a LoRA adapter runs on (as vLLM lists adapters).")


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


