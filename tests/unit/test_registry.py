"""The model registry: versions appear atomically, one is live, rollouts keep labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.config import EncoderModelConfig
from maas.protocol.errors import ModelNotFoundError
from maas.storage.registry import ModelRegistry, RegistryError
from maas.storage.served_classifiers import ServedClassifiers


def add_version(registry: ModelRegistry, name: str, labels: list[str], f1: float = 0.5,
                validation_f1: float | None = None) -> str:
    """A stored version with a training record (test macro-F1, and validation when given)."""
    metrics = {"test_macro_f1": f1} | ({} if validation_f1 is None else {"validation_macro_f1": validation_f1})
    with registry.new_version(name, {"labels": labels}) as (version, folder):
        (folder / "config.json").write_text("{}")
        record = {"task": name, "labels": labels, "metrics": metrics,
                  "data_hash": "abc", "created_at": "2026-01-01T00:00:00+00:00"}
        (folder / "maas_training.json").write_text(json.dumps(record))
    return version


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_versions_are_numbered_and_described(registry: ModelRegistry) -> None:
    assert registry.names() == [] and registry.versions("sentiment") == []
    assert add_version(registry, "sentiment", ["neg", "pos"], 0.7) == "v1"
    assert add_version(registry, "sentiment", ["neg", "pos"], 0.8) == "v2"
    versions = registry.versions("sentiment")
    assert [v.ref for v in versions] == ["sentiment/v1", "sentiment/v2"]
    assert versions[1].metrics["test_macro_f1"] == 0.8
    assert versions[1].labels == ["neg", "pos"] and versions[1].data_hash == "abc"
    assert registry.names() == ["sentiment"]


def test_a_failed_version_leaves_nothing_and_frees_its_number(registry: ModelRegistry) -> None:
    with pytest.raises(RuntimeError), registry.new_version("m", {}) as (version, _):
        assert version == "v1"
        raise RuntimeError("training crashed")
    assert registry.versions("m") == []
    assert add_version(registry, "m", ["a", "b"]) == "v1"


def test_live_pointer_and_resolution(registry: ModelRegistry) -> None:
    add_version(registry, "m", ["a", "b"])
    add_version(registry, "m", ["a", "b"])
    with pytest.raises(RegistryError, match="no live version"):
        registry.resolve("m")
    registry.set_live("m", "v1")
    assert registry.resolve("m").version == "v1"
    assert registry.resolve("m/v2").version == "v2"
    registry.set_live("m", "v2")
    assert registry.live_version("m") == "v2"
    assert [v.live for v in registry.versions("m")] == [False, True]


def test_rollout_refuses_unknown_versions_and_other_labels(registry: ModelRegistry) -> None:
    add_version(registry, "m", ["a", "b"])
    add_version(registry, "m", ["a", "b", "c"])
    registry.set_live("m", "v1")
    with pytest.raises(RegistryError, match="No version v7"):
        registry.set_live("m", "v7")
    with pytest.raises(RegistryError, match="invalid version|Invalid version"):
        registry.set_live("m", "latest")
    with pytest.raises(RegistryError, match="labels"):
        registry.set_live("m", "v2")
    assert registry.live_version("m") == "v1"
    registry.set_live("m", "v2", allow_label_change=True)
    assert registry.live_version("m") == "v2"


def test_served_classifiers_follow_the_live_version(registry: ModelRegistry, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    add_version(registry, "sentiment", ["a", "b"])
    add_version(registry, "sentiment", ["a", "b"])
    registry.set_live("sentiment", "v1")
    served = ServedClassifiers(
        [EncoderModelConfig(name="sentiment", path="registry:sentiment"),
         EncoderModelConfig(name="plain", path=str(plain))],
        registry,
    )
    assert served.resolve("plain") == "plain"
    assert served.resolve("sentiment") == "sentiment/v1"
    registry.set_live("sentiment", "v2")
    assert served.resolve("sentiment") == "sentiment/v2"  # no restart, no cache to expire
    assert served.resolve("sentiment/v1") == "sentiment/v1"  # a pinned version
    assert served.location("sentiment/v1")[1] == registry.root / "sentiment" / "v1"
    assert served.location("plain")[1] == plain.resolve()
    for unknown in ("nope", "sentiment/v9", "plain/v1"):
        with pytest.raises(ModelNotFoundError):
            served.resolve(unknown)
