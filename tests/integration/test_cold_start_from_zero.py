"""Scale to zero in the session's service: its translator deployment has ``min_replicas: 0`` and
starts with no replica (tests/conftest.py). While cold, ``/health`` is 200 and lists it ``cold``,
``/v1/models`` says ``cold``, and ``maas status`` says so; the first translation starts a replica
and is answered. Sorted before the other tests that translate, so the translator is still cold."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TRANSLATOR

pytestmark = pytest.mark.integration


def card(client: httpx.Client) -> dict:
    return next(m for m in client.get("/v1/models").json()["data"] if m["id"] == TRANSLATOR)


def test_a_translator_scaled_to_zero_is_cold_then_answers_its_first_request(client: httpx.Client) -> None:
    from ray import serve

    if card(client)["status"] != "cold":
        pytest.skip("an earlier test already woke the translator")
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["cold"] == ["translator"], health.text
    assert not serve.status().applications["maas"].deployments["translator"].replica_states
    body = {"model": TRANSLATOR, "input": "Good morning, my friend.", "source_language": "en",
            "target_language": "pt"}
    answer = client.post("/v1/pipelines/translate", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == "Bom dia, meu amigo."
    assert card(client)["status"] == "ready"  # the ingress saw its own wake answered
    assert client.get("/health").json()["cold"] == []
