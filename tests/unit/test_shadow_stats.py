"""Which registry version is a challenger, and the shadow statistics stored beside it: replicas'
tallies add up under a lock, the card and ``maas models list`` read them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from maas.cli import main as maas_main
from maas.config import EncoderModelConfig
from maas.endpoints.service.models import shadow_summary
from maas.storage.registry import ModelRegistry
from maas.storage.served_classifiers import ServedClassifiers
from maas.storage.shadow_stats import ShadowLog, ShadowTally


def add_version(registry: ModelRegistry, name: str = "sentiment") -> str:
    with registry.new_version(name, {}) as (version, folder):
        (folder / "maas_training.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    return version


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_the_challenger_is_the_newest_version_newer_than_the_live_one(registry: ModelRegistry) -> None:
    assert registry.challenger("sentiment") is None  # no model
    add_version(registry)
    assert registry.challenger("sentiment") is None  # no live version
    registry.set_live("sentiment", "v1")
    assert registry.challenger("sentiment") is None  # only the live one
    add_version(registry)
    add_version(registry)
    assert registry.challenger("sentiment") == "v3"  # the newest, not v2
    (registry.root / "sentiment" / "v4").mkdir()  # a version being written: no marker yet
    assert registry.challenger("sentiment") == "v3"
    registry.set_live("sentiment", "v3")
    assert registry.challenger("sentiment") is None  # older versions challenge nothing


def test_a_version_rolled_back_from_is_no_challenger(registry: ModelRegistry) -> None:
    for _ in range(2):
        add_version(registry)
    registry.set_live("sentiment", "v1")
    registry.set_live("sentiment", "v2")
    registry.set_live("sentiment", "v1")  # rolled back: v2 was judged
    assert registry.challenger("sentiment") is None
    assert add_version(registry) == "v3"
    assert registry.challenger("sentiment") == "v3"


def test_served_classifiers_see_a_new_challenger_at_once(registry: ModelRegistry) -> None:
    add_version(registry)
    registry.set_live("sentiment", "v1")
    served = ServedClassifiers([EncoderModelConfig(name="sentiment", path="registry:sentiment"),
                                EncoderModelConfig(name="plain", path="/models/plain")], registry)
    assert served.challenger_id("sentiment") is None
    add_version(registry)
    assert served.challenger_id("sentiment") == "sentiment/v2"
    assert served.challenger_id("plain") is None and served.challenger_id("sentiment/v1") is None
    registry.set_live("sentiment", "v2")
    assert served.challenger_id("sentiment") is None


def test_tallies_of_several_replicas_add_up(registry: ModelRegistry) -> None:
    add_version(registry)
    one = ShadowTally(requests=1, texts=2, agreements=1, live_confidence_sum=1.6,
                      challenger_confidence_sum=1.2, live_latency_s_sum=0.01, challenger_latency_s_sum=0.03)

    def replica() -> None:
        log = ShadowLog(ModelRegistry(registry.root))  # each replica its own reader and writer
        for _ in range(25):
            log.add("sentiment", "v1", "v2", one)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ShadowLog(registry).add("sentiment", "v1", "v3", ShadowTally(dropped=2))
    record = ShadowLog(registry).get("sentiment", "v1", "v2")
    assert record is not None and (record.requests, record.texts, record.agreements) == (100, 200, 100)
    assert record.agreement() == 0.5 and record.mean_confidence() == pytest.approx((0.8, 0.6))
    assert record.mean_latency_s() == pytest.approx((0.01, 0.03))
    summary = shadow_summary(record)
    assert (summary.agreement, summary.live_latency_ms, summary.challenger_latency_ms) == (0.5, 10.0, 30.0)
    other = ShadowLog(registry).get("sentiment", "v1", "v3")
    assert other is not None and other.dropped == 2 and other.agreement() is None


def test_models_list_shows_the_challenger_and_its_shadow_stats(
        registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    add_version(registry)
    registry.set_live("sentiment", "v1")
    add_version(registry)
    assert maas_main(["models", "list", "--registry-dir", str(registry.root)]) == 0
    assert "  shadow of sentiment: v2 against live v1: no request shadowed yet" in capsys.readouterr().out
    ShadowLog(registry).add("sentiment", "v1", "v2", ShadowTally(
        requests=4, errors=1, dropped=1, texts=3, agreements=3, live_confidence_sum=2.7,
        challenger_confidence_sum=2.4, live_latency_s_sum=0.03, challenger_latency_s_sum=0.06))
    assert maas_main(["models", "list", "--registry-dir", str(registry.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ("  shadow of sentiment: v2 against live v1: 4 requests (1 errors, 1 dropped), agreement "
            "1.000 over 3 texts, confidence 0.900 vs 0.800, latency 10.0 ms vs 20.0 ms") in lines
    assert [line[:2] for line in lines if "sentiment/v" in line] == ["* ", "  "]  # the rows as before
