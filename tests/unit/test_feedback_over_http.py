"""``POST /v1/feedback`` on the real ingress app (no Ray: a fake generator answers "ok"), with two
API keys: a chat answer's id takes a rating from its own key only; a classification's takes one
of the model's labels; every refusal is an OpenAI error body with the right status and param."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from maas.config import IngressConfig
from maas.edge import key_file
from maas.endpoints.app import build_app
from maas.endpoints.feedback.api import Feedback, FeedbackLimits
from maas.storage.feedback import RememberedInput, load_feedback
from tests.unit.ingress_fakes import Generator, Prompts, ingress

MODEL = "gen"


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[TestClient, dict[str, str], Any]:
    keys = tmp_path / "keys.yaml"
    secrets = {name: key_file.add_key(keys, name, tpm=1_000_000) for name in ("alice", "bob")}
    served = ingress({MODEL: Generator(tokens=3)}, Prompts())
    served.feedback_api = Feedback(tmp_path / "batches", tmp_path / "registry",
                                   lambda model: "sentiment" if model == "sentiment" else None,
                                   FeedbackLimits(max_feedback_per_key=3))
    app = build_app(served, IngressConfig(api_keys_file=str(keys)))
    served.key_auth = app.state.key_auth
    app.state.recorder._send = lambda events: None  # metrics go to a Ray actor: not here
    return TestClient(app), {name: f"Bearer {secret}" for name, secret in secrets.items()}, served


def post(client: TestClient, key: str, **body: Any) -> Any:
    return client.post("/v1/feedback", json=body, headers={"authorization": key})


def error(answer: Any, status: int, param: str, code: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["param"] == param
    assert code is None or body["code"] == code


def test_a_chat_answer_takes_a_rating_from_its_own_key(keyed: Any) -> None:
    client, keys, served = keyed
    chat = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    answer = client.post("/v1/chat/completions", json=chat, headers={"authorization": keys["alice"]}).json()
    stream = client.post("/v1/chat/completions", json={**chat, "stream": True},
                         headers={"authorization": keys["alice"]})
    stream_id = json.loads(stream.text.split("\n")[0].removeprefix("data: "))["id"]
    given = post(client, keys["alice"], response_id=answer["id"], rating=1)
    assert given.status_code == 200, given.text
    assert given.json()["object"] == "feedback" and given.json()["rating"] == 1 and given.json()["model"] == MODEL
    assert post(client, keys["alice"], response_id=stream_id, rating=-1).status_code == 200
    error(post(client, keys["bob"], response_id=answer["id"], rating=1), 404, "response_id", "response_not_found")
    error(post(client, keys["alice"], response_id="chatcmpl-unknown", rating=1), 404, "response_id")
    error(post(client, keys["alice"], response_id=answer["id"], label="positive"), 400, "label")
    error(post(client, keys["alice"], response_id=answer["id"]), 400, "label")
    error(post(client, keys["alice"], response_id=answer["id"], rating=3), 400, "rating")
    rated = served.feedback_api.log_of(MODEL).entries()
    assert [e.rating for group in rated for e in group] == [1, -1]
    assert rated[0][0].messages == [{"role": "user", "content": "Hi"}] and rated[0][0].output == "ok"


def test_a_classification_takes_one_of_the_model_s_labels_within_the_key_s_bound(keyed: Any, tmp_path: Path) -> None:
    client, keys, served = keyed
    served.feedback_api.remember("classify-1", RememberedInput(
        kind="classify", model="sentiment", model_id="sentiment/v2", texts=["late again", "lovely"],
        labels=["negative", "neutral", "positive"]), "alice")  # the key id: its owner
    error(post(client, keys["alice"], response_id="classify-1", label="angry"), 400, "label", "invalid_value")
    error(post(client, keys["alice"], response_id="classify-1", label="negative", index=2), 400, "index")
    error(post(client, keys["alice"], response_id="classify-1", rating=1), 400, "rating")
    error(post(client, keys["bob"], response_id="classify-1", label="negative"), 404, "response_id")
    one = post(client, keys["alice"], response_id="classify-1", label="negative", index=0).json()
    assert one["examples"] == 1 and one["held"] == 1 and one["model"] == "sentiment/v2"
    assert post(client, keys["alice"], response_id="classify-1", label="positive").json()["held"] == 3
    error(post(client, keys["alice"], response_id="classify-1", label="positive", index=1), 413,
          "response_id", "storage_quota_exceeded")
    assert load_feedback(tmp_path / "registry", "sentiment") == [("late again", "positive"), ("lovely", "positive")]


def test_the_route_documents_its_body_and_errors(keyed: Any) -> None:
    client, _, _ = keyed
    route = client.app.openapi()["paths"]["/v1/feedback"]["post"]
    assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("FeedbackRequest")
    assert {"200", "400", "401", "403", "404", "413", "429"} <= set(route["responses"])
