"""Builder of the ``maas`` application: the serving graph composed from one :class:`AppConfig`.

``serve run cluster/maas-cpu.yaml`` calls :func:`build_app` with the config's ``args``;
``maas serve`` does the same through :func:`maas.cli.main`.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from deployments.classifier import ClassifierDeployment
from deployments.encoder import EncoderDeployment
from deployments.generator import GeneratorDeployment
from deployments.ingress import MaasIngress
from deployments.ner import NerDeployment
from deployments.tokenizer import TokenizerDeployment
from deployments.translator import TranslatorDeployment
from maas.allocator import with_tcmalloc
from maas.config import AppConfig, GeneratorModelConfig
from maas.engines.tokenizer import TokenizerSpec
from maas.serving.prefix_router import PREFIX_ROUTER_PATH

APP_NAME = "maas"


def generator_deployment_name(model: str) -> str:
    """Deployment name of a model's generator, e.g. ``generator-smollm2-135m-instruct``."""
    return GeneratorModelConfig.model_construct(name=model).deployment_name()


def tokenizer_specs(config: AppConfig) -> list[TokenizerSpec]:
    """The tokenizer of every served model, with its context length.

    A registry-backed classifier uses the tokenizer of its version live when the tokenizer
    replica starts.
    """
    specs = [TokenizerSpec(g.name, g.path, g.max_model_len) for g in config.generators]
    specs += [TokenizerSpec(m.name, m.path, m.max_seq_len, config.registry_dir)
              for m in [*config.classifier.models, *config.encoder.models]]
    return specs


def generator_app(config: GeneratorModelConfig, registry_dir: str | None = None) -> Application:
    """One model's generator deployment, with the placement group its devices need; LoRA adapters
    are read from the registry in ``registry_dir``."""
    options = with_tcmalloc(config.serve_options())  # vLLM's CPU backend asks for tcmalloc
    if config.prefix_routing.enabled:
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=PREFIX_ROUTER_PATH, request_router_kwargs=config.prefix_routing.router_kwargs())
    return GeneratorDeployment.options(name=config.deployment_name(), **options).bind(
        config, registry_dir)


def build_app(args: AppConfig | dict[str, Any]) -> Application:
    """The serving graph: ingress → tokenizer, one generator per model, classifier, encoder, NER, translator."""
    config = AppConfig.model_validate(args) if isinstance(args, dict) else args
    tokenizer = TokenizerDeployment.options(**config.tokenizer.deployment.to_serve_options()).bind(
        tokenizer_specs(config)
    )
    generators = {g.name: generator_app(g, config.registry_dir) for g in config.generators}
    classifier = None
    if config.classifier.models:
        options = with_tcmalloc(config.classifier.deployment.to_serve_options())
        classifier = ClassifierDeployment.options(**options).bind(config.classifier, config.registry_dir)
    encoder = None
    if config.encoder.models:
        encoder = EncoderDeployment.options(**with_tcmalloc(config.encoder.deployment.to_serve_options())).bind(
            config.encoder
        )
    ner = None
    if config.ner.models:  # spaCy NER, only when the config names NER models
        ner = NerDeployment.options(**config.ner.deployment.to_serve_options()).bind(config.ner)
    translator = None
    if config.translator.models:  # machine translation, only when the config names models
        translator = TranslatorDeployment.options(**config.translator.deployment.to_serve_options()).bind(
            config.translator
        )
    ingress_options = config.ingress.deployment.to_serve_options()
    return MaasIngress.options(**ingress_options).bind(config, tokenizer, generators, classifier, encoder, ner,
                                                       translator)
