"""The classifiers a deployment serves, by the names clients use, mapped to loadable model ids:
a plain folder or an embedded model is served as itself, a ``registry:<name>`` model as its live
registry version (or a pinned ``name/vN``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from maas.protocol.errors import ModelNotFoundError, ModelNotReadyError
from maas.storage.canary_store import CanaryRecord, CanaryStore
from maas.storage.embedded import resolve_model_path
from maas.storage.registry import (
    CANARY_FILE,
    REGISTRY_PREFIX,
    VERSION_PATTERN,
    ModelRegistry,
    ModelVersion,
    RegistryError,
)

CHALLENGER_RECHECK_S = 10.0
"""Longest a served name's challenger is remembered without looking at the registry again."""


class ServedClassifiers:
    """The classifier names a deployment serves, mapped to model ids it can load.

    A model configured with a plain path (or ``embedded:``) has the id of its name. A model
    configured as ``registry:<registry-name>`` is served as its live version, re-read whenever
    ``live.json`` changes: the id is ``<name>/vN``, and clients may pin a version by asking for
    ``<name>/vN`` themselves.
    """

    def __init__(self, models: list[Any], registry: ModelRegistry) -> None:
        self.configs = {m.name: m for m in models}
        self.registry = registry
        self._challengers: dict[str, tuple[tuple[int, float], str | None]] = {}
        self.canaries = CanaryStore(registry)
        self._canaries: dict[str, tuple[tuple[int, float], CanaryRecord | None]] = {}

    def names(self) -> list[str]:
        return list(self.configs)

    def registry_name(self, name: str) -> str | None:
        path = self.configs[name].path
        return path.removeprefix(REGISTRY_PREFIX) if path.startswith(REGISTRY_PREFIX) else None

    def resolve(self, requested: str) -> str:
        """The model id serving ``requested``; :class:`ModelNotFoundError` if none does."""
        if requested in self.configs:
            return self._live_id(requested)
        name, _, version = requested.rpartition("/")
        if name in self.configs and self.registry_name(name) and VERSION_PATTERN.match(version):
            self._version(name, version)
            return requested
        raise ModelNotFoundError.for_model(requested, "classification", self.names())

    def location(self, model_id: str) -> tuple[Any, Path]:
        """``(config, folder)`` of a model id (a bare registry-backed name means its live version)."""
        model_id = self.resolve(model_id)
        if model_id in self.configs:
            return self.configs[model_id], resolve_model_path(self.configs[model_id].path)
        name, _, version = model_id.rpartition("/")
        trained = self._version(name, version)
        # A registry version reads texts as it was trained and scored: same window settings.
        reading = {key: trained.config[key] for key in ("max_seq_len", "max_windows") if key in trained.config}
        return self.configs[name].model_copy(update=reading), Path(trained.path)

    def _live_id(self, name: str) -> str:
        registry_name = self.registry_name(name)
        if registry_name is None:
            return name
        live = self.registry.live_version(registry_name)
        if live is None:
            raise self.not_ready(name)
        return f"{name}/{live}"

    def challenger_id(self, name: str) -> str | None:
        """``<name>/vN`` of the registry version challenging ``name``'s live one
        (:meth:`ModelRegistry.challenger`), else None. Looked up again when the model's registry
        folder changes (a version stored, a rollout) and at least every
        :data:`CHALLENGER_RECHECK_S` (storage whose times are coarse)."""
        registry_name = self.registry_name(name) if name in self.configs else None
        if registry_name is None:
            return None
        try:
            changed = (self.registry.root / registry_name).stat().st_mtime_ns
        except OSError:
            return None
        key = (changed, time.monotonic() // CHALLENGER_RECHECK_S)
        cached = self._challengers.get(name)
        if cached is None or cached[0] != key:
            version = self.registry.challenger(registry_name)
            cached = (key, f"{name}/{version}" if version else None)
            self._challengers[name] = cached
        return cached[1]

    def canary_of(self, name: str) -> CanaryRecord | None:
        """The running canary of a served registry name, else None (a pinned ``name/vN`` has
        none). Read again when ``canary.json`` changes and at least every
        :data:`CHALLENGER_RECHECK_S`."""
        registry_name = self.registry_name(name) if name in self.configs else None
        if registry_name is None:
            return None
        try:
            changed = (self.registry.root / registry_name / CANARY_FILE).stat().st_mtime_ns
        except OSError:
            return None
        key = (changed, time.monotonic() // CHALLENGER_RECHECK_S)
        cached = self._canaries.get(name)
        if cached is None or cached[0] != key:
            cached = (key, self.canaries.active(registry_name))
            self._canaries[name] = cached
        return cached[1]

    def ready_names(self) -> list[str]:
        """The served names that can answer now (a registry model needs a live version)."""
        return [n for n in self.configs
                if self.registry_name(n) is None or self.registry.live_version(self.registry_name(n))]

    def not_ready(self, name: str) -> ModelNotReadyError:
        """The 503 of a registry model with no live version, saying where its training stands."""
        status = self.registry.training_status(self.registry_name(name) or name)
        if status is None or status.state == "done":
            return ModelNotReadyError(
                f"The model '{name}' has no live version yet: train it with `maas train` "
                "(`maas serve` trains the built-in tasks in the background).", retry_after_s=60)
        if status.state == "failed":
            return ModelNotReadyError(f"The model '{name}' is not ready: its training failed "
                                      f"({status.detail}); see `maas status`.", retry_after_s=300)
        wait = min(max(status.eta_s or 30.0, 5.0), 300.0)
        return ModelNotReadyError(f"The model '{name}' is being trained ({status.line()}); retry "
                                  "later.", retry_after_s=wait)

    def _version(self, name: str, version: str) -> ModelVersion:
        try:
            return self.registry.get(self.registry_name(name) or name, version)
        except RegistryError as exc:
            raise ModelNotFoundError(str(exc), "model") from None
