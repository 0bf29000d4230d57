"""Typed configuration of the ``maas`` application, loadable from a Serve config YAML.

The Serve config under ``cluster/`` holds one application whose ``args`` are an
:class:`AppConfig`; Ray's ``serve run``/``serve deploy`` and ``maas serve`` read the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from maas.config.models import (
    ClassifierConfig,
    EncoderConfig,
    EncoderModelConfig,
    GeneratorModelConfig,
    NerConfig,
    NerModelConfig,
    TokenizerConfig,
    TranslationModelConfig,
    TranslatorConfig,
)
from maas.config.options import DeploymentOptions, StrictModel
from maas.limits import FairShareLimits, RequestBudget


class IngressConfig(StrictModel):
    """The HTTP ingress deployment."""

    api_keys_file: str | None = Field(
        None,
        description="YAML file of hashed API keys (`maas keys add`); every route but /health and "
        "the playground then needs `Authorization: Bearer <key>`. Re-read when it changes.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger ones get 413."
    )
    request_timeout_s: float | None = Field(
        600.0, gt=0,
        description="Deadline for a response to start (a stream starts with its first event); "
        "past it the request is cancelled, its engine work aborted, and the answer is 504.",
    )
    max_stream_s: float | None = Field(
        600.0, gt=0,
        description="Longest a streamed answer may run, from its first event; past it the stream "
        "ends with an error event (`stream_timeout`) and `data: [DONE]`, and its engine work is "
        "aborted. None: no limit (a stream is then bounded by its `max_tokens` only).",
    )
    limits: RequestBudget = Field(
        default_factory=RequestBudget,
        description="The most work one request may ask for (maas/limits.py); over it, a 400 "
        "`request_too_large`.",
    )
    fair_share: FairShareLimits = Field(
        default_factory=FairShareLimits,
        description="What one tenant (an API key, else a client address) may hold at once: requests "
        "and generated sequences in flight; over it, a bounded wait, then a 429 with `Retry-After`.",
    )
    max_file_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Largest batch input file accepted by /v1/files."
    )
    max_open_batches_per_key: int = Field(
        8, ge=1, le=10_000,
        description="Batches not yet ended (validating, in_progress, finalizing, cancelling) an API key "
        "may have; one more is a 429. Per key in the key file (`max_open_batches`); without keys, "
        "for the whole service.",
    )
    max_storage_mib_per_key: int = Field(
        256, ge=1,
        description="MiB of files (inputs and batch outputs) an API key may store; an upload past it "
        "is a 413. Per key in the key file (`max_storage_mib`); without keys, for the whole service.",
    )
    file_expiry_s: int = Field(
        30 * 24 * 3600, ge=60,
        description="Seconds a file is kept after its upload, or after its batch ended for an output "
        "file (its `expires_at`); then it is deleted, unless an active batch reads it.",
    )
    batch_concurrency: int = Field(
        4, ge=1, le=256,
        description="Requests of one batch in flight at a time: a batch takes no more than this "
        "share of the service from interactive traffic.",
    )
    store_responses: bool = Field(
        True,
        description="Whether /v1/responses stores a response when its request does not say (`store`): "
        "stored responses can be retrieved and continued by `previous_response_id`, on any replica.",
    )
    response_retention_s: int = Field(
        30 * 24 * 3600, ge=60,
        description="Seconds a stored response is kept after its creation; then it is deleted (a 404).",
    )
    max_stored_responses_per_key: int = Field(
        10_000, ge=1,
        description="Stored responses an API key may hold; one more is a 413 (`storage_quota_exceeded`). "
        "Without keys, for the whole service.",
    )
    max_stored_response_mib_per_key: int = Field(
        1024, ge=1,
        description="MiB of stored responses an API key may hold on `batch_dir` (each response's file: "
        "its output, input items and the conversation it continues); a response that would pass it is "
        "a 413 (`storage_quota_exceeded`). Without keys, for the whole service.",
    )
    feedback_retention_s: int = Field(
        24 * 3600, ge=0,
        description="Seconds the input of a classify or chat completion answer is remembered (on "
        "`batch_dir`, per API key) so that `/v1/feedback` can name it by its id; 0: not remembered "
        "(feedback off).",
    )
    max_feedback_inputs_per_key: int = Field(
        10_000, ge=1,
        description="Answers whose input an API key keeps for feedback; past it the oldest are "
        "forgotten. Without keys, for the whole service.",
    )
    max_feedback_input_mib_per_key: int = Field(
        64, ge=1,
        description="MiB of remembered answer inputs an API key keeps; past it the oldest are forgotten.",
    )
    max_feedback_per_key: int = Field(
        10_000, ge=1,
        description="Feedback entries (one per labelled text or rated answer) an API key may hold per "
        "model; one more is a 413 (`storage_quota_exceeded`).",
    )
    replica_status_refresh_s: float = Field(
        2.0, gt=0, le=60,
        description="Scale to zero: how old Serve's replica counts, read by each ingress replica "
        "for `/v1/models` (`cold`), `/health` and the requests of a deployment with "
        "`min_replicas: 0`, may be before it reads them again (one call to Serve's controller per "
        "period at most; none without such a deployment).",
    )
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.1, max_ongoing_requests=256),
        description="Serve options.",
    )


class AppConfig(StrictModel):
    """Everything the ``maas`` application is built from."""

    generators: list[GeneratorModelConfig] = Field(
        default_factory=list, description="Generative models, one deployment each."
    )
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="Classifiers.")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Embedding models.")
    ner: NerConfig = Field(default_factory=NerConfig, description="Named-entity recognition (spaCy).")
    translator: TranslatorConfig = Field(
        default_factory=TranslatorConfig, description="Machine translation (/v1/pipelines/translate)."
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizers.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="HTTP ingress.")
    registry_dir: str | None = Field(
        None, description="Model registry folder (shared storage on a cluster); None: cache_dir()/registry."
    )
    batch_dir: str | None = Field(
        None, description="Batch API files and batch states, and stored responses (`responses/`) "
        "(shared storage on a cluster); None: cache_dir()/batches.",
    )

    @model_validator(mode="after")
    def _unique_model_names(self) -> AppConfig:
        names = [m.name for m in self.all_models()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique across deployments: {duplicates}")
        return self

    @model_validator(mode="after")
    def _unique_adapter_names(self) -> AppConfig:
        models = {m.name for m in self.all_models()}
        adapters = [a for g in self.generators for a in g.lora.adapters]
        clashes = sorted({a for a in adapters if a in models or adapters.count(a) > 1})
        if clashes:
            raise ValueError(f"adapter names must differ from model names and from each other: {clashes}")
        return self

    @model_validator(mode="after")
    def _scale_to_zero(self) -> AppConfig:
        if self.ingress.deployment.scales_to_zero():
            raise ValueError("the ingress cannot scale to zero (it receives every request): "
                             "ingress.deployment.autoscaling.min_replicas must be at least 1")
        deadline = self.ingress.request_timeout_s
        for name, options in self.deployments().items():
            if options.scales_to_zero() and deadline is not None and options.cold_start_timeout_s >= deadline:
                raise ValueError(f"{name}: cold_start_timeout_s ({options.cold_start_timeout_s:g}) must be "
                                 f"below ingress.request_timeout_s ({deadline:g}), else a cold start "
                                 "ends in the request deadline's 504")
        return self

    def deployments(self) -> dict[str, DeploymentOptions]:
        """The Serve options of every deployment the application starts, by deployment name: the
        ingress, the tokenizer, one generator per model, and each of the others that has models."""
        found = {"ingress": self.ingress.deployment, "tokenizer": self.tokenizer.deployment}
        found.update({g.deployment_name(): g.deployment for g in self.generators})
        for name, part in (("classifier", self.classifier), ("encoder", self.encoder), ("ner", self.ner),
                           ("translator", self.translator)):
            if part.models:
                found[name] = part.deployment
        return found

    def model_deployments(self) -> dict[str, str]:
        """The deployment that serves each model, by model name (LoRA adapters: see
        :class:`~maas.storage.served_adapters.ServedAdapters`)."""
        found = {g.name: g.deployment_name() for g in self.generators}
        for deployment, models in (("classifier", self.classifier.models), ("encoder", self.encoder.models),
                                   ("ner", self.ner.models), ("translator", self.translator.models)):
            found.update({m.name: deployment for m in models})
        return found

    def all_models(
        self,
    ) -> list[GeneratorModelConfig | EncoderModelConfig | NerModelConfig | TranslationModelConfig]:
        """Every served model: generators, classifiers, encoders, NER pipelines, translation models."""
        return [*self.generators, *self.classifier.models, *self.encoder.models, *self.ner.models,
                *self.translator.models]


class ServeFile(BaseModel):
    """The parts of a Serve config file that maas reads (the rest passes through)."""

    model_config = ConfigDict(extra="allow")

    applications: list[dict[str, Any]]
    http_options: dict[str, Any] = Field(default_factory=dict)


def load_serve_file(path: str | Path) -> ServeFile:
    """Parse a Serve config YAML file."""
    import yaml

    return ServeFile.model_validate(yaml.safe_load(Path(path).read_text()))


def load_app_config(path: str | Path, app_name: str = "maas") -> AppConfig:
    """The :class:`AppConfig` of the named application in a Serve config YAML file."""
    for app in load_serve_file(path).applications:
        if app.get("name") == app_name:
            return AppConfig.model_validate(app.get("args") or {})
    raise ValueError(f"{path}: no application named {app_name!r}")
