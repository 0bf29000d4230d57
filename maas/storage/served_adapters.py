"""The LoRA adapters the generators serve, by the names clients use, mapped to registry versions.

A generator's ``lora.adapters`` lists registry names. A request for ``topic-lora`` is served by
that adapter's live version (``topic-lora/v2``, re-read from ``live.json`` at every request, so
``maas rollout`` takes effect at the next request); a request may pin ``topic-lora/v1``. The
generator deployment loads the version on demand (Serve model multiplexing, ids ``name/vN``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.config import AppConfig, GeneratorModelConfig
from maas.protocol.errors import ModelNotFoundError, ModelNotReadyError
from maas.storage.registry import VERSION_PATTERN, ModelRegistry, ModelVersion, RegistryError

ADAPTER_KIND = "lora-adapter"
"""``kind`` in an adapter version's training record (``config.kind``)."""


def is_adapter(version: ModelVersion) -> bool:
    """Whether a registry version is a LoRA adapter (not a classifier)."""
    return version.config.get("kind") == ADAPTER_KIND


class ServedAdapters:
    """Adapter names → ``(generator name, adapter id name/vN)``, through the registry."""

    def __init__(self, generators: list[GeneratorModelConfig], registry: ModelRegistry) -> None:
        self.registry = registry
        self.base: dict[str, GeneratorModelConfig] = {
            name: g for g in generators if g.lora.enabled for name in g.lora.adapters
        }

    def names(self) -> list[str]:
        return list(self.base)

    def is_adapter_name(self, requested: str) -> bool:
        """Whether ``requested`` names a served adapter (``name`` or ``name/vN``)."""
        name, _, version = requested.partition("/")
        return name in self.base and (not version or bool(VERSION_PATTERN.match(version)))

    def generator(self, requested: str) -> GeneratorModelConfig:
        """The config of the generator serving adapter ``requested``."""
        return self.base[requested.partition("/")[0]]

    def resolve(self, requested: str) -> tuple[str, str]:
        """``(generator name, adapter id)`` serving ``requested`` now; 404 if no such adapter or
        version, 503 ``model_not_ready`` if the adapter has no live version yet."""
        if not self.is_adapter_name(requested):
            raise ModelNotFoundError.for_model(requested, "generation", self.names())
        name, _, version = requested.partition("/")
        if not version:
            version = self.registry.live_version(name) or ""
            if not version:
                raise ModelNotReadyError(f"The adapter '{name}' has no live version yet: train it with "
                                         "`maas train` and roll it out with `maas rollout`.", retry_after_s=60)
        self.version(f"{name}/{version}")
        return self.base[name].name, f"{name}/{version}"

    def version(self, adapter_id: str) -> ModelVersion:
        """The registry version of an adapter id; 404 if it does not exist or is no adapter."""
        name, _, version = adapter_id.partition("/")
        try:
            found = self.registry.get(name, version)
        except RegistryError as exc:
            raise ModelNotFoundError(str(exc), "model") from None
        if not is_adapter(found):
            raise ModelNotFoundError(f"{adapter_id} is not a LoRA adapter.", "model")
        return found

    def location(self, adapter_id: str) -> Path:
        return Path(self.version(adapter_id).path)

    def live_version(self, name: str) -> str | None:
        return self.registry.live_version(name)


def check_servable(version: ModelVersion, config: AppConfig, config_name: str = "the Serve config") -> None:
    """Refuse (RegistryError) to roll out an adapter that no generator of ``config`` serves: its base
    model is not served, is served without LoRA, does not list the adapter, or caps the rank lower."""
    base = str(version.config.get("generator") or "")
    rank = int(version.config.get("rank") or 0)
    generators = {g.name: g for g in config.generators}
    served = generators.get(base)
    if served is None:
        raise RegistryError(
            f"{version.ref} adapts the generator '{base}', which {config_name} does not serve "
            f"(generators: {', '.join(generators) or 'none'}): serve its base model first.")
    if not served.lora.enabled or version.name not in served.lora.adapters:
        raise RegistryError(
            f"{version.ref} adapts '{base}', but {config_name} does not serve it there: add "
            f"'{version.name}' to that generator's lora.adapters (with lora.enabled: true).")
    if rank > served.lora.max_rank:
        raise RegistryError(f"{version.ref} has LoRA rank {rank}, above the max_rank "
                            f"{served.lora.max_rank} that '{base}' serves.")


def adapter_card_fields(adapters: ServedAdapters, name: str) -> dict[str, Any]:
    """``/v1/models`` fields of an adapter: its base model (``parent``, as vLLM lists adapters),
    context length, live version and status."""
    base = adapters.generator(name)
    live = adapters.live_version(name)
    return {"id": name, "capability": "generate", "parent": base.name, "max_model_len": base.max_model_len,
            "version": live, "status": "ready" if live else "not_trained"}
