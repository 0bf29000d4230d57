"""Train → serve: several registry models side by side, and a live rollout under load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from maas.cli import main as maas_main
from pipelines.training.train import train_classifier
from tests.conftest import CLASSIFIER, TOPIC, small_train_config
from tests.integration.test_encoders import transformers_probs

pytestmark = pytest.mark.integration

TEXTS = ["What a fantastic day, I love it!", "The flight was delayed again, awful service.",
         "The meeting is on Tuesday.", "Shares of the bank fell after the election."]
REQUESTS = 240
CONCURRENCY = 8
SWITCH_AFTER = 80


def test_sentiment_and_topic_are_served_side_by_side(client: httpx.Client) -> None:
    sentiment = client.post("/v1/classify", json={"model": CLASSIFIER, "input": TEXTS}).json()
    topic = client.post("/v1/classify", json={"model": TOPIC, "input": TEXTS}).json()
    assert sentiment["model"] == "sentiment/v1" and topic["model"] == "topic/v1"
    assert sentiment["data"][0]["labels"] == ["negative", "neutral", "positive"]
    assert topic["data"][0]["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards[CLASSIFIER]["version"] == "v1" and cards[TOPIC]["version"] == "v1"
    assert cards[CLASSIFIER]["capability"] == cards[TOPIC]["capability"] == "classify"


async def classify_load(base_url: str, registry: Path, log: list[dict]) -> float:
    """``REQUESTS`` classify calls from ``CONCURRENCY`` clients; roll out v2 after ``SWITCH_AFTER``
    answers. Returns the time the rollout command returned."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    switched = asyncio.Event()
    switch_time = {"t": float("inf")}

    async def one_client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            text = TEXTS[i % len(TEXTS)]
            start = time.monotonic()
            response = await http.post("/v1/classify", json={"model": CLASSIFIER, "input": text})
            log.append({"start": start, "end": time.monotonic(), "status": response.status_code,
                        "text": text, "body": response.json()})
            if len(log) == SWITCH_AFTER and not switched.is_set():
                switched.set()
                args = ["rollout", CLASSIFIER, "v2", "--registry-dir", str(registry)]
                assert await asyncio.to_thread(maas_main, args) == 0
                switch_time["t"] = time.monotonic()

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        await asyncio.gather(*(one_client(http) for _ in range(CONCURRENCY)))
    return switch_time["t"]


@pytest.mark.timeout(900)
def test_rollout_v1_to_v2_under_load(service: str, client: httpx.Client, registry_dir: Path) -> None:
    v2 = train_classifier(small_train_config("sentiment", registry_dir, seed=1, max_train_examples=320))
    assert (v2.model_ref, v2.live) == ("sentiment/v2", False)  # trained, stored, not yet live
    assert client.post("/v1/classify", json={"model": CLASSIFIER, "input": "x"}).json()["model"] == "sentiment/v1"
    expected = {version: dict(zip(TEXTS, transformers_probs(registry_dir / "sentiment" / version, TEXTS, 64)))
                for version in ("v1", "v2")}

    log: list[dict] = []
    try:
        switch_time = asyncio.run(classify_load(service, registry_dir, log))
        pinned = client.post("/v1/classify", json={"model": "sentiment/v1", "input": TEXTS[0]}).json()
        assert client.get("/v1/models").json()["data"]
    finally:
        assert maas_main(["rollout", CLASSIFIER, "v1", "--registry-dir", str(registry_dir)]) == 0

    assert len(log) == REQUESTS and all(entry["status"] == 200 for entry in log)  # none failed
    for entry in log:
        version = entry["body"]["model"].rpartition("/")[2]
        assert entry["body"]["data"][0]["probs"] == pytest.approx(expected[version][entry["text"]], abs=1e-4)
    after = [e for e in log if e["start"] > switch_time]
    before = [e for e in log if e["end"] < switch_time]
    assert after and all(e["body"]["model"] == "sentiment/v2" for e in after)
    assert before and all(e["body"]["model"] == "sentiment/v1" for e in before)
    assert pinned["model"] == "sentiment/v1"  # a pinned version is still served after the rollout
    assert pinned["data"][0]["probs"] == pytest.approx(expected["v1"][TEXTS[0]], abs=1e-4)


def test_rollout_refuses_an_unknown_version(registry_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert maas_main(["rollout", CLASSIFIER, "v42", "--registry-dir", str(registry_dir)]) == 2
    assert "No version v42" in capsys.readouterr().err
    assert maas_main(["models", "list", "--registry-dir", str(registry_dir)]) == 0
    listing = capsys.readouterr().out
    assert "* sentiment/v1" in listing and "topic/v1" in listing
