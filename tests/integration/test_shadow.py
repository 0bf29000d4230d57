"""Shadow traffic on the session's service: a challenger of ``sentiment`` gets live requests after
their answers, which stay the live version's.

The challenger is a copy of the live version's folder stored as a new registry version through
the registry's own API (``new_version``): a real model, loaded on the classifier replica by the
production loading code; with the same weights its agreement must be 1.0. The session config
shadows every request (``classifier.shadow.fraction: 1.0`` in ``tests/conftest.py``), which costs
nothing where no challenger exists. At the end the challenger is retired through the registry
too (rolled out and back, so it is ``previous`` and no challenger any more), leaving the live
version as it was for the tests after this one. ``test_rollout.py`` runs before this module (it
trains ``sentiment/v2`` itself and rolls back to v1, which makes v2 no challenger).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from maas.cli import main as maas_main
from maas.storage.files import MARKER_FILE
from maas.storage.registry import ModelRegistry
from tests.conftest import CLASSIFIER, settled_metrics

pytestmark = pytest.mark.integration

TEXTS = ["What a fantastic day, I love it!", "The flight was delayed again, awful service.",
         "The meeting is on Tuesday.", "I am not sure how I feel about the new phone."]
REQUESTS = 20
STATS_TIMEOUT_S = 60


def store_copy_of_live(registry: ModelRegistry) -> str:
    """A new version of ``sentiment`` with the live version's files: the challenger."""
    live = registry.resolve(CLASSIFIER)
    with registry.new_version(CLASSIFIER, {"copied_from": live.ref}) as (version, folder):
        shutil.copytree(live.path, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER_FILE))
    return version


def shadow_card(client: httpx.Client) -> dict:
    return client.get(f"/v1/models/{CLASSIFIER}").json()


def wait_for_shadow_stats(client: httpx.Client, sampled: int) -> dict:
    """The card once every sampled request's shadow call is in the registry's figures (replicas
    write them about once a second)."""
    deadline = time.monotonic() + STATS_TIMEOUT_S
    card = shadow_card(client)
    while time.monotonic() < deadline:
        shadow = (card.get("challenger") or {}).get("shadow") or {}
        if shadow.get("requests", 0) + shadow.get("dropped", 0) >= sampled:
            break
        time.sleep(0.5)
        card = shadow_card(client)
    return card


def metric_value(text: str, name: str, **labels: str) -> float:
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{([^}}]*)\}} (\S+)$", line)
        if match and all(label in match.group(1).split(",") for label in wanted):
            return float(match.group(2))
    raise AssertionError(f"no {name} with {labels} in /metrics")


def test_a_challenger_gets_shadow_traffic_without_changing_answers(
        service: str, client: httpx.Client, registry_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(registry_dir)
    live = registry.live_version(CLASSIFIER)
    assert live is not None and registry.challenger(CLASSIFIER) is None
    expected = client.post("/v1/classify", json={"model": CLASSIFIER, "input": TEXTS}).json()["data"]

    challenger = store_copy_of_live(registry)
    try:
        assert registry.challenger(CLASSIFIER) == challenger
        # loaded once by a pinned request (not shadowed), so shadow calls do not wait for the load
        pinned = client.post("/v1/classify", json={"model": f"{CLASSIFIER}/{challenger}", "input": TEXTS[0]})
        assert pinned.status_code == 200
        answers = [client.post("/v1/classify", json={"model": CLASSIFIER, "input": TEXTS[i % len(TEXTS)]}).json()
                   for i in range(REQUESTS)]
        card = wait_for_shadow_stats(client, REQUESTS)
        metrics = settled_metrics(service)
        assert maas_main(["models", "list", "--registry-dir", str(registry_dir)]) == 0
        listing = capsys.readouterr().out
    finally:
        registry.set_live(CLASSIFIER, challenger)  # retired: rolled out and back, it is `previous`
        registry.set_live(CLASSIFIER, live)
    assert registry.challenger(CLASSIFIER) is None and registry.live_version(CLASSIFIER) == live

    # every answer is the live version's, as before the challenger existed
    for i, answer in enumerate(answers):
        before = expected[i % len(TEXTS)]
        assert answer["model"] == f"{CLASSIFIER}/{live}"
        assert answer["data"][0]["label"] == before["label"]
        assert answer["data"][0]["probs"] == pytest.approx(before["probs"], abs=1e-4)

    # /v1/models: the challenger, and every sampled request shadowed or dropped (fraction 1.0)
    assert card["version"] == live and card["challenger"]["version"] == challenger
    shadow = card["challenger"]["shadow"]
    print(f"shadow stats: {shadow}")
    assert shadow["live_version"] == live and shadow["errors"] == 0
    assert shadow["requests"] >= 1 and shadow["requests"] + shadow["dropped"] == REQUESTS
    assert shadow["texts"] == shadow["requests"] and shadow["agreement"] == 1.0  # the same weights
    assert shadow["challenger_confidence"] == pytest.approx(shadow["live_confidence"], abs=1e-4)
    assert shadow["live_latency_ms"] > 0 and shadow["challenger_latency_ms"] > 0

    # /metrics: the same counts, labelled by model and versions only
    labels = {"model": CLASSIFIER, "live_version": live, "challenger_version": challenger}
    assert metric_value(metrics, "maas_shadow_requests_total", **labels) == shadow["requests"]
    assert metric_value(metrics, "maas_shadow_agreements_total", **labels) == shadow["texts"]
    assert metric_value(metrics, "maas_shadow_latency_seconds_count", answered_by="challenger",
                        **labels) == shadow["requests"]

    # maas models list: the same figures under the model's versions
    assert f"  shadow of {CLASSIFIER}: {challenger} against live {live}: {shadow['requests']} requests" in listing
    assert f"agreement 1.000 over {shadow['texts']} texts" in listing
