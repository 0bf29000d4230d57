"""``POST /v1/feedback`` on the session's real service: a classification's id takes the correct
label, which lands in the registry for ``maas train --with-feedback``; an unknown id is a 404 and a
label the model lacks a 400; over the keyed ingress a chat answer's rating is its key's only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from maas.storage.feedback import load_feedback
from tests.conftest import CLASSIFIER, GENERATOR, KeyedService

pytestmark = pytest.mark.integration

TEXT = "The delivery came two weeks late and the box was crushed."


def test_a_classification_takes_its_correct_label(client: httpx.Client, registry_dir: Path) -> None:
    answer = client.post("/v1/classify", json={"model": CLASSIFIER, "input": [TEXT]}).json()
    labels = answer["data"][0]["labels"]
    given = client.post("/v1/feedback", json={"response_id": answer["id"], "label": "negative"})
    assert given.status_code == 200, given.text
    assert given.json()["model"] == answer["model"] and given.json()["examples"] == 1
    assert (TEXT, "negative") in load_feedback(registry_dir, "sentiment")
    unknown = client.post("/v1/feedback", json={"response_id": "classify-0123", "label": "negative"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "response_id"
    bad = client.post("/v1/feedback", json={"response_id": answer["id"], "label": "furious"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "label"
    assert all(label in bad.json()["error"]["message"] for label in labels)


def test_a_chat_answer_s_rating_is_its_key_s_only(keyed_service: KeyedService) -> None:
    chat = {"model": GENERATOR, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.Client(base_url=keyed_service.url, timeout=120) as http:
        answer: Any = http.post("/v1/chat/completions", json=chat, headers=keyed_service.bearer("ann")).json()
        rate = {"response_id": answer["id"], "rating": 1}
        other = http.post("/v1/feedback", json=rate, headers=keyed_service.bearer("ben"))
        assert other.status_code == 404 and other.json()["error"]["code"] == "response_not_found"
        own = http.post("/v1/feedback", json=rate, headers=keyed_service.bearer("ann"))
        assert own.status_code == 200 and own.json()["rating"] == 1, own.text
