"""One admission path: every route that uses a model goes through :func:`maas.edge.admission.admitted`,
which admits the models an operation uses (defaults resolved) and charges its usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from maas.config import IngressConfig
from maas.edge.admission import ADMITTED, UNKNOWN_MODEL, Answer, admitted, metric_model
from maas.edge.auth import KeyAuth
from maas.edge.http import MODEL_SCOPE_KEY
from maas.edge.key_file import ApiKey
from maas.endpoints.app import build_app
from maas.protocol.base import UsageInfo
from maas.protocol.errors import PermissionDeniedError

OPEN_ROUTES = {("GET", "/health"), ("GET", "/metrics"), ("GET", "/"), ("GET", "/v1/models"),
               ("GET", "/v1/models/{model_id:path}"),
               ("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"),
               ("GET", "/v1/files/{file_id}/content"), ("DELETE", "/v1/files/{file_id}"),
               ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}"),
               ("POST", "/v1/batches/{batch_id}/cancel"),
               ("GET", "/v1/responses/{response_id}"), ("DELETE", "/v1/responses/{response_id}"),
               ("GET", "/v1/responses/{response_id}/input_items"),
               ("POST", "/v1/responses/{response_id}/cancel")}
"""Routes that use no model: /v1/models lists only what the key allows, and /v1/models/{id} is a 404
for a model the key may not use (checked by their own tests);
the Batch API's files and batches belong to a key (another key gets 404), a batch's models are
admitted when it is created (that route is admitted) and each of its requests when it runs; a stored
response belongs to a key too, and reading or deleting it runs no model."""


def test_every_route_of_the_app_is_admitted() -> None:
    app = build_app(None, IngressConfig())

    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    unadmitted = [(method, r.path) for r in routes for method in r.methods
                  if (method, r.path) not in OPEN_ROUTES and not getattr(r.endpoint, ADMITTED, False)]
    assert not unadmitted, f"routes that skip admission: {unadmitted}"
    assert len(routes) >= 15


class Request:
    """An ASGI request as the auth middleware leaves it: the admitted key in the scope, and
    the app's state (its ingress and key auth)."""

    def __init__(self, key: ApiKey | None, ingress: Any, auth: KeyAuth) -> None:
        self.scope: dict[str, Any] = {"maas.key": key} if key else {}
        self.state = SimpleNamespace()
        self.app = SimpleNamespace(state=SimpleNamespace(ingress=ingress, key_auth=auth))


class Charges(KeyAuth):
    def __init__(self) -> None:
        super().__init__()
        self.charged: list[int] = []

    def charge(self, scope_or_request: Any, tokens: int) -> None:
        self.charged.append(tokens)


def key(models: list[str]) -> ApiKey:
    return ApiKey(id="k", sha256="0" * 64, models=models)


class Ingress:
    def __init__(self, models: list[str], answer: Any) -> None:
        self.models, self.answer = models, answer

    async def models_used(self, body: Any, key_id: str | None) -> list[str]:
        return self.models

    def served_models(self) -> frozenset[str]:
        return frozenset({"chat", "sentiment"})


def run(models: list[str], answer: Any, allowed: list[str] | None) -> tuple[Any, list[int]]:
    auth = Charges()
    route = admitted(_returning(answer))
    result = asyncio.run(route(None, Request(key(allowed) if allowed is not None else None,
                                             Ingress(models, answer), auth)))
    if hasattr(result, "body_iterator"):
        asyncio.run(_drain(result.body_iterator))
    return result, auth.charged


def _returning(answer: Any) -> Any:
    async def route(body: Any, request: Any) -> Any:
        return answer
    return route


async def _drain(items: AsyncIterator[Any]) -> None:
    async for _ in items:
        pass


def test_every_model_an_operation_uses_must_be_allowed() -> None:
    answer = SimpleNamespace(usage=UsageInfo.of(3, 4))
    assert run(["chat", "sentiment"], answer, ["chat", "sentiment"])[1] == [7]
    with pytest.raises(PermissionDeniedError, match="sentiment"):  # a default model too
        run(["chat", "sentiment"], answer, ["chat"])
    assert run(["sentiment/v1"], answer, ["sentiment"])[1] == [7]  # a pinned version


@pytest.mark.parametrize("named, label", [
    ("chat", "chat"), ("sentiment/v3", "sentiment"), ("sentiment/v99999", "sentiment"),
    ("nope", UNKNOWN_MODEL), ("x" * 256, UNKNOWN_MODEL), ("nope/chat", UNKNOWN_MODEL)])
def test_metrics_label_a_request_with_a_served_model_or_unknown(named: str, label: str) -> None:
    """The metrics actor keeps every label set forever: a client's string is never a label."""
    request = Request(None, Ingress([named], None), Charges())
    asyncio.run(admitted(_returning(None))(None, request))
    assert request.scope[MODEL_SCOPE_KEY] == label
    assert metric_model(named, ["chat", "sentiment"]) == label


def test_streams_are_charged_when_they_end() -> None:
    class Chunk(BaseModel):
        usage: UsageInfo | None = None

    async def chunks() -> AsyncIterator[Any]:
        yield Chunk()
        yield Chunk(usage=UsageInfo.of(5, 6))

    response, charged = run(["chat"], Answer(chunks(), {"x-a": "1"}), ["chat"])
    assert charged == [11] and response.headers["x-a"] == "1"
    assert response.media_type == "text/event-stream"


def pipelines() -> Any:
    from maas.config import GeneratorModelConfig
    from maas.endpoints.tasks.rules import PipelineBackend, Pipelines

    async def unused(*_: Any) -> Any:
        raise AssertionError("admission runs no operation")

    return Pipelines(PipelineBackend(
        chat=unused, open_chat_stream=unused, classify=unused, entities=unused,
        generators={"chat": GeneratorModelConfig(name="chat", path="unused")},
        classifiers=frozenset({"sentiment", "topic"}), ner_models=("ner",),
        translate_text=unused, translators={"mt": ["en-pt", "pt-en"]}))


def test_pipelines_declare_their_models_with_defaults_resolved() -> None:
    from maas.endpoints.tasks.protocol import (
        AnalyzeRequest,
        EntitiesRequest,
        ModeratedChatRequest,
        SummarizeRequest,
        TranslateRequest,
    )
    from maas.protocol.errors import ModelNotFoundError

    tasks = pipelines()
    hi = [{"role": "user", "content": "hi"}]
    assert tasks.models_of(SummarizeRequest(input="text")) == ["chat"]
    assert tasks.models_of(TranslateRequest(input="text", source_language="en", target_language="pt")) == ["mt"]
    assert tasks.models_of(TranslateRequest(input="text", source_language="en", target_language="fr")) == ["chat"]
    assert tasks.models_of(EntitiesRequest(input="text")) == ["ner"]
    assert tasks.models_of(AnalyzeRequest(input="text")) == ["sentiment", "topic", "ner", "chat"]
    assert tasks.models_of(AnalyzeRequest(input="text", topic_model=None, summary_model=None)) == [
        "sentiment", "ner"]
    assert tasks.models_of(ModeratedChatRequest(messages=hi)) == ["chat", "sentiment"]
    assert tasks.models_of(ModeratedChatRequest(messages=hi, moderation_model="topic")) == ["chat", "topic"]
    with pytest.raises(ModelNotFoundError):
        tasks.models_of(ModeratedChatRequest(messages=hi, moderation_model="nope"))
