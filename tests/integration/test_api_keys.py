"""API keys over real HTTP: 401 without a good key, 403 for another model (and for /metrics without
an admin key), 429 with Retry-After over the rate limit, revocation without a restart; /health and
the playground stay open."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from maas.edge import key_file
from maas.edge.auth import SharedRateLimiter
from tests.conftest import wait_healthy

pytestmark = pytest.mark.integration

MODEL = "tiny-classifier"
ENCODER = "secured-encoder"
PREFIX = "/secured"


@pytest.fixture(scope="module")
def tiny_classifier(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-label head on MiniLM: enough to check who may call it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / MODEL
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("keys") / "api-keys.yaml"
    secrets = {
        "alice": key_file.add_key(path, "alice", [MODEL], rpm=4),
        "bob": key_file.add_key(path, "bob", ["some-other-model"]),
        "carol": key_file.add_key(path, "carol", [MODEL], tpm=40),
        "dave": key_file.add_key(path, "dave", ["some-other-model"]),
        "erin": key_file.add_key(path, "erin", [ENCODER], rpm=1000, tpm=1_000_000),
        "ops": key_file.add_key(path, "ops", admin=True),
        "frank": key_file.add_key(path, "frank", [ENCODER], max_storage_mib=1),
    }
    return path, secrets


@pytest.fixture(scope="module")
def secured(service: str, tiny_classifier: Path, minilm_dir: Path, keys: tuple[Path, dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second maas application (a classifier and an encoder) that requires API keys, on the
    same proxy."""
    from ray import serve

    from maas.config import AppConfig
    from pipelines.app import build_app

    config = AppConfig.model_validate({
        "classifier": {"models": [{"name": MODEL, "path": str(tiny_classifier), "max_seq_len": 32}],
                       "deployment": {"num_cpus": 0.1}},
        "encoder": {"models": [{"name": ENCODER, "path": str(minilm_dir), "max_seq_len": 32}],
                    "deployment": {"num_cpus": 0.05}},
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        # two ingress replicas: a key's limits are counted across both (one shared limiter actor)
        "ingress": {"api_keys_file": str(keys[0]), "deployment": {"num_cpus": 0.05, "num_replicas": 2}},
        "batch_dir": str(tmp_path_factory.mktemp("secured-batches")),  # files of this run only
    })
    serve.run(build_app(config), name="secured", route_prefix=PREFIX, blocking=False)
    wait_healthy(service + PREFIX, 300)
    yield service + PREFIX
    serve.delete("secured")
    with contextlib.suppress(ValueError):  # the limiter actor is detached: it outlives the app
        ray.kill(shared_limiter())


def shared_limiter() -> Any:
    """The actor that counts the secured app's key limits for both its ingress replicas."""
    return ray.get_actor(SharedRateLimiter("secured").actor_name, namespace=SharedRateLimiter.NAMESPACE)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def classify(base: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base}/v1/classify", json={"model": MODEL, "input": "hello"}, headers=headers,
                      timeout=60)


def test_keys_guard_every_route_but_health(secured: str, keys: tuple[Path, dict[str, str]]) -> None:
    path, secrets = keys
    for method, route in (("GET", "/v1/models"), ("POST", "/v1/classify"), ("GET", "/metrics"),
                          ("POST", "/v1/tokenize"), ("POST", "/v1/pipelines/analyze")):
        for headers in ({}, bearer("maas-wrong"), {"Authorization": "Basic abc"}):
            response = httpx.request(method, secured + route, json={}, headers=headers, timeout=30)
            assert response.status_code == 401, (route, headers, response.text)
            assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{secured}/health", timeout=30).status_code == 200
    assert httpx.get(f"{secured}/", timeout=30).status_code == 200  # the playground page

    # a key limited to another model: 403 for this one, and /v1/models hides it
    refused = classify(secured, bearer(secrets["bob"]))
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"
    models = httpx.get(f"{secured}/v1/models", headers=bearer(secrets["bob"]), timeout=30).json()
    assert [card["id"] for card in models["data"]] == []
    # and so does GET /v1/models/{id} (the openai client's models.retrieve): 404, as for an unknown id
    hidden = httpx.get(f"{secured}/v1/models/{MODEL}", headers=bearer(secrets["bob"]), timeout=30)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found", hidden.text
    card = httpx.get(f"{secured}/v1/models/{MODEL}", headers=bearer(secrets["carol"]), timeout=30)
    assert card.status_code == 200 and card.json()["id"] == MODEL, card.text
    assert httpx.get(f"{secured}/v1/models/{MODEL}", timeout=30).status_code == 401


def test_metrics_need_an_admin_key(secured: str, keys: tuple[Path, dict[str, str]]) -> None:
    _, secrets = keys
    refused = httpx.get(f"{secured}/metrics", headers=bearer(secrets["erin"]), timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_required", refused.text
    metrics = httpx.get(f"{secured}/metrics", headers=bearer(secrets["ops"]), timeout=30)
    assert metrics.status_code == 200 and "maas_requests" in metrics.text


def test_rate_limit_and_revocation(secured: str, keys: tuple[Path, dict[str, str]]) -> None:
    path, secrets = keys
    alice = bearer(secrets["alice"])
    statuses = [classify(secured, alice).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 200]
    # over the limit, whichever of the two ingress replicas answers: the count is shared
    for _ in range(4):
        limited = classify(secured, alice)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert ray.get(shared_limiter().usage.remote("alice")) == (4, 0)

    # revoked, no restart: each ingress replica re-reads the changed key file within its interval
    key_file.revoke_key(path, "bob")
    time.sleep(key_file.RELOAD_INTERVAL_S + 0.5)
    assert [classify(secured, bearer(secrets["bob"])).status_code for _ in range(6)] == [401] * 6


def analyze(base: str, headers: dict[str, str]) -> httpx.Response:
    """A pipeline whose only part is the classifier (the other parts' defaults are not served)."""
    return httpx.post(f"{base}/v1/pipelines/analyze", json={"input": "I really love this phone.",
                      "sentiment_model": MODEL}, headers=headers, timeout=60)


def test_pipelines_are_admitted_and_charged_like_any_route(secured: str,
                                                           keys: tuple[Path, dict[str, str]]) -> None:
    _, secrets = keys
    refused = analyze(secured, bearer(secrets["dave"]))  # dave may not use the classifier
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed", refused.text
    statuses = []
    carol = bearer(secrets["carol"])  # 40 tokens a minute: a few analyses, then 429
    for _ in range(20):
        response = analyze(secured, carol)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert ray.get(shared_limiter().usage.remote("carol"))[1] >= 40


def test_batches_belong_to_their_key_and_are_admitted_and_charged(secured: str,
                                                                    keys: tuple[Path, dict[str, str]]) -> None:
    import json

    _, secrets = keys
    erin, dave = bearer(secrets["erin"]), bearer(secrets["dave"])
    lines = "".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                                "body": {"model": ENCODER, "input": f"text {i}"}}) + "\n" for i in range(6))

    def upload(headers: dict[str, str]) -> str:
        response = httpx.post(f"{secured}/v1/files", files={"file": ("in.jsonl", lines.encode())},
                              data={"purpose": "batch"}, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def create(file_id: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{secured}/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings",
                                                          "completion_window": "24h"}, headers=headers, timeout=60)

    erins_file = upload(erin)
    assert httpx.get(f"{secured}/v1/files/{erins_file}", headers=dave, timeout=30).status_code == 404
    assert create(erins_file, dave).status_code == 404  # not dave's file
    refused = create(upload(dave), dave)  # dave's own file, a model dave may not use
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    batch = create(erins_file, erin).json()
    assert httpx.get(f"{secured}/v1/batches/{batch['id']}", headers=dave, timeout=30).status_code == 404
    deadline = time.monotonic() + 300
    while batch["status"] != "completed":
        assert time.monotonic() < deadline and batch["status"] in ("validating", "in_progress"), batch
        time.sleep(1)
        batch = httpx.get(f"{secured}/v1/batches/{batch['id']}", headers=erin, timeout=30).json()
    assert batch["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    requests, tokens = ray.get(shared_limiter().usage.remote("erin"))
    assert tokens > 0 and requests >= 6  # each request of the batch counted against erin's key


def test_a_keys_own_storage_cap_stops_an_upload_with_a_413(secured: str, keys: tuple[Path, dict[str, str]]) -> None:
    import json

    frank = bearer(keys[1]["frank"])  # in the key file from the start: both ingress replicas know it
    line = json.dumps({"custom_id": "f", "method": "POST", "url": "/v1/embeddings",
                       "body": {"model": ENCODER, "input": "x" * 1000}}) + "\n"

    def upload(content: bytes) -> httpx.Response:
        return httpx.post(f"{secured}/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"},
                          headers=frank, timeout=60)

    small = upload(line.encode())
    assert small.status_code == 200, small.text
    big = upload(line.encode() * 1100)  # over 1 MiB with the first file
    assert big.status_code == 413, big.text
    assert big.json()["error"]["code"] == "storage_quota_exceeded"
    listed = httpx.get(f"{secured}/v1/files", headers=frank, timeout=30).json()["data"]
    assert [f["id"] for f in listed] == [small.json()["id"]]  # nothing of the refused upload is kept
