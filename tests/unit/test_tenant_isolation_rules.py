"""One tenant cannot hurt another: client strings are bounded and never become metric labels,
/metrics needs an admin key when keys are on, and every client mistake is a 400 that the
OpenAPI schema announces. The ingress's real app, over a fake ingress (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from maas.config import MAX_INPUTS_PER_REQUEST, IngressConfig
from maas.edge.key_file import add_key
from maas.edge.metrics import MetricsRegistry
from maas.endpoints.app import build_app
from maas.endpoints.encoding.protocol import EmbeddingResponse
from maas.endpoints.encoding.scoring_protocol import MAX_RERANKED_DOCUMENTS, MAX_SCORED_TEXTS
from maas.endpoints.generation import responses as responses_rules
from maas.protocol.base import MAX_MESSAGES, MAX_NAME_LENGTH, UsageInfo
from maas.protocol.errors import ModelNotFoundError

ENCODER = "enc"


class RegistryActor:
    """The metrics actor's registry, called in-process the way the recorder calls the actor."""

    def __init__(self) -> None:
        self.registry = MetricsRegistry()
        actor = self

        class RecordMany:
            @staticmethod
            def remote(events: list[Any]) -> None:
                actor.registry.record_many(events)

        class Render:
            @staticmethod
            async def remote() -> str:
                return actor.registry.render()

        self.record_many, self.render = RecordMany(), Render()


class Ingress:
    """What the routes call: one served encoder; anything else is a 404 naming the model."""

    def served_models(self) -> frozenset[str]:
        return frozenset({ENCODER})

    async def models_used(self, body: Any, key_id: str | None = None) -> list[str]:
        return [body.model]

    async def embeddings(self, body: Any) -> EmbeddingResponse:
        if body.model != ENCODER:
            raise ModelNotFoundError.for_model(body.model, "embeddings", [ENCODER])
        return EmbeddingResponse(data=[], model=ENCODER, usage=UsageInfo.of(1))

    async def responses(self, body: Any, owner: str | None = None) -> dict[str, Any]:
        return {"messages": len(responses_rules.chat_request(body).messages)}


def client_of(config: IngressConfig) -> TestClient:
    app = build_app(Ingress(), config)
    app.state.recorder._actor = RegistryActor()  # noqa: SLF001 - no Ray in unit tests
    return TestClient(app)


@pytest.fixture
def client() -> TestClient:
    return client_of(IngressConfig())


def metrics_text(client: TestClient, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return response.text


def embed(client: TestClient, model: str, **extra: Any) -> Any:
    return client.post("/v1/embeddings", json={"model": model, "input": "x", **extra})


def test_unknown_models_are_counted_as_unknown_and_metrics_stay_small(client: TestClient) -> None:
    assert embed(client, ENCODER).status_code == 200
    before = metrics_text(client)
    for i in range(20):
        response = embed(client, f"nope-{i}-" + "x" * 200)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    after = metrics_text(client)
    assert "nope-" not in after
    assert 'model="unknown"' in after and f'model="{ENCODER}"' in after
    assert len(after) < len(before) + 2_000  # one more label set, not twenty


@pytest.mark.parametrize("body, param", [
    ({"model": "m" * (MAX_NAME_LENGTH + 1), "input": "x"}, "model"),
    ({"model": "m" * 100_000, "input": "x"}, "model"),
    ({"model": ENCODER, "input": "x", "user": "u" * (MAX_NAME_LENGTH + 1)}, "user"),
    ({"model": ENCODER, "input": ["x"] * (MAX_INPUTS_PER_REQUEST + 1)}, "input"),
])
def test_long_client_strings_are_a_400_with_the_openai_body(client: TestClient, body: dict[str, Any],
                                                             param: str) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert len(response.content) < 1_000  # the answer does not echo the client's string
    assert 'model="m' not in metrics_text(client)


@pytest.mark.parametrize("path, body, param", [
    ("/v1/batches", {"input_file_id": "f", "endpoint": "/v1/embeddings", "metadata": {"k" * 65: "v"}},
     "metadata"),
    ("/v1/batches", {"input_file_id": "f", "endpoint": "/v1/embeddings",
                     "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ("/v1/batches", {"input_file_id": "f" * 129, "endpoint": "/v1/embeddings"}, "input_file_id"),
    ("/v1/responses", {"model": ENCODER, "input": "x", "metadata": {"k": "v" * 513}}, "metadata"),
    ("/v1/responses", {"model": ENCODER, "input": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)},
     "input"),
    ("/v1/responses", {"model": ENCODER, "instructions": "be brief",
                       "input": [{"role": "user", "content": "x"}] * MAX_MESSAGES}, "input"),
    ("/v1/score", {"model": ENCODER, "text_1": ["a"] * (MAX_SCORED_TEXTS + 1), "text_2": "b"}, "text_1"),
    ("/v1/rerank", {"model": ENCODER, "query": "q", "documents": ["d"] * (MAX_RERANKED_DOCUMENTS + 1)},
     "documents"),
    ("/v1/classify", {"model": "c", "input": ["x"] * (MAX_INPUTS_PER_REQUEST + 1)}, "input"),
    ("/v1/pipelines/entities", {"input": ["x"] * (MAX_INPUTS_PER_REQUEST + 1)}, "input"),
    ("/v1/pipelines/analyze", {"input": "x", "topic_model": "t" * (MAX_NAME_LENGTH + 1)}, "topic_model"),
])
def test_every_limit_is_a_400_naming_its_parameter(client: TestClient, path: str, body: dict[str, Any],
                                                    param: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_long_file_or_batch_id_is_a_400(client: TestClient) -> None:
    for path in ("/v1/files/" + "f" * 129, "/v1/batches/" + "b" * 129):
        response = client.get(path)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_responses_take_as_many_messages_as_a_chat(client: TestClient) -> None:
    messages = [{"role": "user", "content": "x"}] * MAX_MESSAGES
    response = client.post("/v1/responses", json={"model": ENCODER, "input": messages})
    assert response.status_code == 200 and response.json() == {"messages": MAX_MESSAGES}
    response = client.post("/v1/responses", json={"model": ENCODER, "input": messages[1:],
                                                  "instructions": "be brief"})
    assert response.status_code == 200 and response.json() == {"messages": MAX_MESSAGES}


def test_the_schema_announces_the_limits(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    def list_limit(model: str, field: str) -> int:
        prop = schemas[model]["properties"][field]
        return next(branch["maxItems"] for branch in prop.get("anyOf", [prop]) if "maxItems" in branch)

    assert schemas["EmbeddingRequest"]["properties"]["model"]["maxLength"] == MAX_NAME_LENGTH
    assert schemas["ResponsesRequest"]["properties"]["model"]["maxLength"] == MAX_NAME_LENGTH
    assert list_limit("ResponsesRequest", "input") == MAX_MESSAGES
    assert list_limit("ScoreRequest", "text_1") == MAX_SCORED_TEXTS
    assert list_limit("RerankRequest", "documents") == MAX_RERANKED_DOCUMENTS
    assert list_limit("ClassifyRequest", "input") == MAX_INPUTS_PER_REQUEST
    assert list_limit("EmbeddingRequest", "input") == MAX_INPUTS_PER_REQUEST
    assert 2 * MAX_SCORED_TEXTS <= MAX_INPUTS_PER_REQUEST  # both sides fit one encoder request
    assert MAX_RERANKED_DOCUMENTS + 1 <= MAX_INPUTS_PER_REQUEST  # the documents and the query


# ---------------------------------------------------------------------------------- /metrics


@pytest.fixture
def keyed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[TestClient, str, str]:
    path = tmp_path / "keys.yaml"
    admin, user = add_key(path, "ops", admin=True), add_key(path, "team-a")
    capsys.readouterr()
    return client_of(IngressConfig(api_keys_file=str(path))), admin, user


def test_metrics_need_an_admin_key_when_keys_are_on(keyed: tuple[TestClient, str, str]) -> None:
    client, admin, user = keyed
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {user}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_key_required"
    assert "maas_requests" in metrics_text(client, Authorization=f"Bearer {admin}")
    assert embed(client, ENCODER).status_code == 401
    assert client.post("/v1/embeddings", json={"model": ENCODER, "input": "x"},
                       headers={"Authorization": f"Bearer {user}"}).status_code == 200


def test_metrics_stay_open_without_keys_and_document_the_403(client: TestClient) -> None:
    assert "maas_requests" in metrics_text(client)
    responses = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]
    assert "admin" in responses["403"]["description"]
