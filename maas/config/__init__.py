"""Typed configuration of the ``maas`` application, loadable from a Serve config YAML: the
application (:mod:`maas.config.app`: :class:`AppConfig`, the ingress, the Serve file), the model
deployments (:mod:`maas.config.models`) and the building blocks both use
(:mod:`maas.config.options`). Everything is importable from ``maas.config`` itself."""

from __future__ import annotations

from maas.config.app import AppConfig, IngressConfig, ServeFile, load_app_config, load_serve_file
from maas.config.models import (
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    MAX_INPUTS_PER_REQUEST,
    PAIR_PATTERN,
    PARALLEL_ENGINE_KWARGS,
    BatchingOptions,
    CanaryConfig,
    ClassifierConfig,
    EncoderConfig,
    EncoderModelConfig,
    GeneratorModelConfig,
    NerConfig,
    NerModelConfig,
    PromotionConfig,
    ShadowConfig,
    TokenizerConfig,
    TranslationModelConfig,
    TranslatorConfig,
)
from maas.config.options import (
    VLLM_LORA_RANKS,
    AutoscalingOptions,
    DeploymentOptions,
    EncoderDtype,
    GeneratorAutoscalingOptions,
    GeneratorDeploymentOptions,
    LoraOptions,
    ModelName,
    PlacementStrategy,
    Pooling,
    PrefixRoutingOptions,
    StrictModel,
)

__all__ = [
    "CPU_BATCH_SIZE", "GPU_BATCH_SIZE", "MAX_INPUTS_PER_REQUEST", "PAIR_PATTERN", "PARALLEL_ENGINE_KWARGS",
    "VLLM_LORA_RANKS", "AppConfig", "AutoscalingOptions", "BatchingOptions", "CanaryConfig",
    "ClassifierConfig", "DeploymentOptions", "EncoderConfig", "EncoderDtype", "EncoderModelConfig",
    "GeneratorAutoscalingOptions", "GeneratorDeploymentOptions", "GeneratorModelConfig",
    "IngressConfig", "LoraOptions", "ModelName", "NerConfig", "NerModelConfig", "PlacementStrategy", "Pooling",
    "PrefixRoutingOptions", "PromotionConfig",
    "ServeFile", "ShadowConfig", "StrictModel", "TokenizerConfig", "TranslationModelConfig", "TranslatorConfig",
    "load_app_config", "load_serve_file",
]
