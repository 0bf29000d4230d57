"""Canaries on the session's service: ``maas rollout topic vN --canary 50`` answers about half of
``topic``'s requests with vN; a good canary is promoted through the promotion rule, a failing one
is rolled back by itself while every client gets the live version's answer.

The canaries are copies of the live version's folder stored as new registry versions through the
registry's own API (``new_version``): real models, loaded on the classifier replica by the
production loading code. The good one is stored with a validation score 0.01 above the live
version's (the rule wants better on validation; the copy's weights, and so its shadow agreement
of 1.0, are the live version's). The failing one is the fault injected: its ``config.json`` is
broken, so every call to it fails on the classifier replica. The session config judges canaries
after few requests (``classifier.canary`` in ``tests/conftest.py``). ``topic`` is used, not
``sentiment`` (``test_shadow.py``'s); each test leaves ``topic/v1`` live and its canary version no
challenger, as ``test_rollout.py`` expects.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from maas.cli import main as maas_main
from maas.storage.canary_store import CanaryStore
from maas.storage.files import MARKER_FILE
from maas.storage.registry import TRAINING_FILE, ModelRegistry
from tests.conftest import TOPIC, settled_metrics
from tests.integration.test_shadow import metric_value

pytestmark = pytest.mark.integration

TEXTS = ["The central bank raised interest rates again.", "The striker scored twice in the final.",
         "The new phone ships with a faster chip.", "Parliament votes on the budget next week."]
SPLIT_REQUESTS = 20  # fewer than promote_after_requests / 0.5: no promotion during the split
MAX_REQUESTS = 200
DECISION_TIMEOUT_S = 60


def store_copy(registry: ModelRegistry, validation_gain: float = 0.0, broken: bool = False) -> str:
    """A new version of ``topic`` with the live version's files (a better validation score by
    ``validation_gain``; ``broken``: an unreadable ``config.json``, the fault injected)."""
    live = registry.resolve(TOPIC)
    with registry.new_version(TOPIC, {"copied_from": live.ref}) as (version, folder):
        shutil.copytree(live.path, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER_FILE))
        record = json.loads((folder / TRAINING_FILE).read_text())
        record["metrics"]["validation_macro_f1"] += validation_gain
        (folder / TRAINING_FILE).write_text(json.dumps(record))
        if broken:
            (folder / "config.json").write_text("{broken")
    return version


def classify(client: httpx.Client, i: int) -> str:
    """The version that answered one request (which must succeed)."""
    response = client.post("/v1/classify", json={"model": TOPIC, "input": TEXTS[i % len(TEXTS)]})
    assert response.status_code == 200, response.text
    return response.json()["model"]


def canary(client: httpx.Client) -> dict:
    return client.get(f"/v1/models/{TOPIC}").json()["canary"]


def until_decided(client: httpx.Client, start: int) -> tuple[list[str], dict]:
    """Requests until the canary is decided (replicas judge about once a second): the versions
    that answered and the card's canary."""
    answered: list[str] = []
    deadline = time.monotonic() + DECISION_TIMEOUT_S
    card = canary(client)
    while card["running"] is not None and time.monotonic() < deadline and len(answered) < MAX_REQUESTS:
        answered += [classify(client, start + len(answered) + i) for i in range(4)]
        card = canary(client)
    return answered, card


def start_canary(registry_dir: Path, version: str) -> None:
    assert maas_main(["rollout", TOPIC, version, "--canary", "50", "--registry-dir", str(registry_dir)]) == 0


def restore(registry: ModelRegistry, live: str) -> None:
    CanaryStore(registry).stop(TOPIC)
    registry.set_live(TOPIC, live)


def test_a_canary_answers_its_share_and_a_good_one_is_promoted(
        service: str, client: httpx.Client, registry_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(registry_dir)
    live = registry.live_version(TOPIC)
    assert live is not None
    challenger = store_copy(registry, validation_gain=0.01)
    try:
        # loaded once by a pinned request, so the canary's first calls do not wait for the load
        assert client.post("/v1/classify", json={"model": f"{TOPIC}/{challenger}", "input": "x"}).status_code == 200
        start_canary(registry_dir, challenger)
        split = [classify(client, i) for i in range(SPLIT_REQUESTS)]
        rest, card = until_decided(client, SPLIT_REQUESTS)
        promoted_live = registry.live_version(TOPIC)
        metrics = settled_metrics(service)
        assert maas_main(["models", "list", "--registry-dir", str(registry_dir)]) == 0
        listing = capsys.readouterr().out
        print(listing)
    finally:
        restore(registry, live)  # the copy is `previous` now: no challenger
    assert registry.challenger(TOPIC) is None

    by_canary = split.count(f"{TOPIC}/{challenger}")
    print(f"canary answered {by_canary} of {SPLIT_REQUESTS}; decided after {len(rest)} more; {card}")
    assert set(split) <= {f"{TOPIC}/{live}", f"{TOPIC}/{challenger}"}
    assert 4 <= by_canary <= 16  # 50% of 20, binomial: outside this one run in 400

    decision = card["decisions"][-1]
    assert card["running"] is None and promoted_live == challenger
    assert decision["action"] == "promoted" and decision["version"] == challenger
    evidence = decision["evidence"]
    assert evidence["canary_requests"] >= 24 and evidence["canary_errors"] == 0
    assert evidence["canary_p95_ms"] > 0 and evidence["promote_after_requests"] == 24
    assert evidence["rule"]["validation_ok"] and evidence["rule"]["agreement"] == 1.0
    assert "started" in [d["action"] for d in card["decisions"][:-1]]  # `held` may come between

    labels = {"model": TOPIC, "live_version": live, "canary_version": challenger}
    assert metric_value(metrics, "maas_canary_requests_total", answered_by="canary", **labels) >= 24
    assert metric_value(metrics, "maas_canary_decisions_total", decision="promoted", **labels) == 1
    assert f"promoted {challenger} (live {live}): passed its canary and the promotion rule" in listing


def test_a_failing_canary_is_rolled_back_and_clients_see_no_error(
        service: str, client: httpx.Client, registry_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(registry_dir)
    live = registry.live_version(TOPIC)
    assert live is not None
    broken = store_copy(registry, validation_gain=0.01, broken=True)
    try:
        start_canary(registry_dir, broken)
        answered, card = until_decided(client, 0)  # each asserts a 200
        challenger = registry.challenger(TOPIC)
        assert maas_main(["models", "list", "--registry-dir", str(registry_dir)]) == 0
        listing = capsys.readouterr().out
    finally:
        restore(registry, live)
    print(f"{len(answered)} requests until rolled back; {card['decisions'][-1]}\n{listing}")
    assert f"rolled_back {broken} (live {live}): error rate 1.000" in listing
    assert set(answered) == {f"{TOPIC}/{live}"}  # every answer the live version's
    decision = card["decisions"][-1]
    assert card["running"] is None and decision["action"] == "rolled_back" and decision["version"] == broken
    assert decision["evidence"]["canary_error_rate"] == 1.0 and decision["evidence"]["canary_requests"] >= 4
    assert decision["reason"].startswith("error rate 1.000 exceeds the live version's 0.000")
    assert registry.live_version(TOPIC) == live and challenger is None  # rolled back: no challenger
