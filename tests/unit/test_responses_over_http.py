"""The Responses routes of the real ingress app (no Ray: a fake generator answers "ok"), with two
API keys: what one key stores the other cannot read, continue or delete; a conversation continued
past the context is a clear 400; the routes' errors are OpenAI error bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from maas.config import IngressConfig
from maas.edge import key_file
from maas.endpoints.app import build_app
from maas.endpoints.responses.api import ResponseLimits, StoredResponses
from maas.endpoints.responses.store import ResponseStore
from tests.unit.ingress_fakes import MAX_CHARS, Generator, Prompts, ingress

MODEL = "gen"


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    keys = tmp_path / "keys.yaml"
    secrets = {name: key_file.add_key(keys, name, tpm=1_000_000) for name in ("alice", "bob")}
    served = ingress({MODEL: Generator(tokens=3)}, Prompts())  # a stream: three tokens
    served.stored_responses = StoredResponses(ResponseStore(tmp_path / "batches"), ResponseLimits(max_per_key=4))
    app = build_app(served, IngressConfig(api_keys_file=str(keys)))
    served.key_auth = app.state.key_auth
    app.state.recorder._send = lambda events: None  # metrics go to a Ray actor: not here
    return TestClient(app), {name: f"Bearer {secret}" for name, secret in secrets.items()}


def create(client: TestClient, key: str, **fields: Any) -> Any:
    return client.post("/v1/responses", json={"model": MODEL, "input": "Hi", **fields},
                       headers={"authorization": key})


def test_a_stored_response_is_its_key_s_only(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    first = create(client, keys["alice"]).json()
    assert first["store"] is True and first["output"][0]["content"][0]["text"] == "ok"
    path = f"/v1/responses/{first['id']}"
    assert client.get(path, headers={"authorization": keys["alice"]}).json() == first
    for method, route in (("GET", path), ("DELETE", path), ("GET", f"{path}/input_items")):
        answer = client.request(method, route, headers={"authorization": keys["bob"]})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "response_not_found"
    chained = create(client, keys["bob"], previous_response_id=first["id"])
    assert chained.status_code == 404 and chained.json()["error"]["param"] == "previous_response_id"
    second = create(client, keys["alice"], previous_response_id=first["id"]).json()
    assert second["previous_response_id"] == first["id"]
    deleted = client.delete(path, headers={"authorization": keys["alice"]}).json()
    assert deleted == {"id": first["id"], "object": "response", "deleted": True}
    assert client.get(path, headers={"authorization": keys["alice"]}).status_code == 404


def test_store_false_is_not_kept(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    answer = create(client, keys["alice"], store=False).json()
    assert answer["store"] is False
    assert client.get(f"/v1/responses/{answer['id']}", headers={"authorization": keys["alice"]}).status_code == 404


def test_a_conversation_past_the_context_is_a_400_naming_previous_response_id(
        keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    long_text = "x" * (MAX_CHARS // 2)
    first = create(client, keys["alice"], input=long_text).json()
    assert create(client, keys["alice"], input=long_text).status_code == 200  # alone, it fits
    answer = create(client, keys["alice"], input=long_text, previous_response_id=first["id"])
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["param"] == "previous_response_id" and first["id"] in error["message"]


def test_over_the_cap_is_a_413_before_the_model_runs(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    for _ in range(4):
        assert create(client, keys["alice"]).status_code == 200
    calls = len(client.app.state.ingress.generators[MODEL].calls)
    over = create(client, keys["alice"])
    assert over.status_code == 413 and over.json()["error"]["code"] == "storage_quota_exceeded"
    assert len(client.app.state.ingress.generators[MODEL].calls) == calls
    assert create(client, keys["bob"]).status_code == 200


def test_a_streamed_response_is_stored_before_its_last_event(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    with client.stream("POST", "/v1/responses", json={"model": MODEL, "input": "Hi", "stream": True},
                       headers={"authorization": keys["alice"]}) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith("data: {")]
    last = json.loads(lines[-1].removeprefix("data: "))
    assert last["type"] == "response.incomplete"
    stored = client.get(f"/v1/responses/{last['response']['id']}", headers={"authorization": keys["alice"]})
    assert stored.json()["output"][0]["content"][0]["text"] == "aaa"


def test_bad_ids_background_and_cancel_are_client_errors(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    too_long = client.get("/v1/responses/" + "x" * 200, headers={"authorization": keys["alice"]})
    assert too_long.status_code == 400 and too_long.json()["error"]["type"] == "invalid_request_error"
    dots = client.get("/v1/responses/..%2F..%2Fkeys", headers={"authorization": keys["alice"]})
    assert dots.status_code == 404
    background = create(client, keys["alice"], background=True, store=False)
    assert background.status_code == 400 and background.json()["error"]["param"] == "background"
    streamed = create(client, keys["alice"], background=True, stream=True)
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"
    plain = create(client, keys["alice"]).json()
    cancel = client.post(f"/v1/responses/{plain['id']}/cancel", json={}, headers={"authorization": keys["alice"]})
    assert cancel.status_code == 400 and "background" in cancel.json()["error"]["message"]
    other = client.post(f"/v1/responses/{plain['id']}/cancel", json={}, headers={"authorization": keys["bob"]})
    assert other.status_code == 404


def test_an_over_long_background_prompt_is_a_400_at_creation_not_a_failed_response(
        keyed: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    client, keys = keyed
    started: list[str] = []  # the runner is a Ray actor: here, only whether it was started
    monkeypatch.setattr(type(client.app.state.ingress), "_start_response_runner",
                        lambda self, response_id, owner, queued=True: started.append(response_id))
    long_text = "x" * (MAX_CHARS // 2)
    first = create(client, keys["alice"], input=long_text).json()
    store = client.app.state.ingress.stored_responses.store
    before = store.count("alice")
    over = create(client, keys["alice"], background=True, input="x" * (MAX_CHARS + 1))
    error = over.json()["error"]
    assert over.status_code == 400 and error["code"] == "context_length_exceeded", over.text
    chained = create(client, keys["alice"], background=True, input=long_text, previous_response_id=first["id"])
    error = chained.json()["error"]
    assert chained.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["param"] == "previous_response_id" and first["id"] in error["message"]
    assert started == [] and store.count("alice") == before == 1  # nothing queued
    queued = create(client, keys["alice"], background=True, input=long_text)  # alone, it fits
    assert queued.status_code == 200 and queued.json()["status"] == "queued"
    assert started == [queued.json()["id"]]
