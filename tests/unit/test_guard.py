"""Edge checks before any engine work: body size (413), content type (415), deadline (504),
and request text that is not valid Unicode or numbers that are not finite (400).

A small FastAPI app with the ingress's own middleware and error mapping, over real HTTP
semantics (Starlette's test client); the full service runs the same table in
tests/integration/test_errors.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from maas.edge.guard import RequestLimits, install_request_guard
from maas.edge.http import install_error_handlers
from maas.endpoints.encoding.protocol import EmbeddingRequest
from maas.protocol.chat import ChatCompletionRequest

LIMITS = RequestLimits(max_body_bytes=64 * 1024, request_timeout_s=0.5)
cancelled: list[str] = []


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_request_guard(app, LIMITS)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> dict:
        return {"messages": len(body.messages)}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict:
        return {"inputs": 1 if isinstance(body.input, str) else len(body.input)}

    @app.post("/slow")
    async def slow() -> dict:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return {}

    @app.post("/stream")
    async def stream() -> StreamingResponse:
        async def events():  # noqa: ANN202
            for i in range(4):
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.3)  # 1.2 s in all, past the deadline: allowed once started

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(), raise_server_exceptions=False)


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def raw(client: TestClient, path: str, body: bytes, content_type: str | None = "application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=body, headers=headers)


def chunked(body: bytes):  # noqa: ANN201 - a generator: httpx sends it without Content-Length
    for i in range(0, len(body), 4096):
        yield body[i : i + 4096]


CASES = [
    ("too large (Content-Length)", lambda c: raw(c, "/v1/embeddings", b" " * (LIMITS.max_body_bytes + 1)),
     413, "payload_too_large"),
    ("too large (chunked)", lambda c: c.post("/v1/embeddings", content=chunked(b" " * 200_000),
                                             headers={"content-type": "application/json"}),
     413, "payload_too_large"),
    ("form content type", lambda c: raw(c, "/v1/chat/completions", b"a=b",
                                        "application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
    ("text content type", lambda c: raw(c, "/v1/chat/completions", json.dumps(CHAT).encode(), "text/plain"),
     415, "unsupported_media_type"),
    ("no content type", lambda c: raw(c, "/v1/chat/completions", json.dumps(CHAT).encode(), None),
     415, "unsupported_media_type"),
    ("invalid UTF-8", lambda c: raw(c, "/v1/chat/completions",
                                    b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
     400, None),
    ("lone surrogate", lambda c: raw(c, "/v1/chat/completions",
                                     b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
     400, "invalid_value"),
    ("NaN temperature", lambda c: raw(c, "/v1/chat/completions",
                                      json.dumps({**CHAT, "temperature": float("nan")}).encode()), 400, None),
    ("overflowing number", lambda c: raw(c, "/v1/chat/completions",
                                         json.dumps(CHAT).encode()[:-1] + b', "top_p": 1e999}'), 400, None),
    ("5,000-digit integer", lambda c: raw(c, "/v1/chat/completions",
                                          json.dumps(CHAT).encode()[:-1] + b', "seed": ' + b"9" * 5000 + b"}"),
     400, None),
    ("deadline", lambda c: raw(c, "/slow", b"{}"), 504, "request_timeout"),
]


@pytest.mark.parametrize(("name", "send", "status", "code"), CASES, ids=[case[0] for case in CASES])
def test_refused_with_the_openai_error_body(client: TestClient, name: str, send, status: int,
                                            code: str | None) -> None:
    response = send(client)
    assert response.status_code == status, (name, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code


def test_deadline_cancels_the_work(client: TestClient) -> None:
    cancelled.clear()
    assert raw(client, "/slow", b"{}").status_code == 504
    assert cancelled == ["slow"]


def test_a_started_stream_may_outlast_the_deadline(client: TestClient) -> None:
    response = raw(client, "/stream", b"{}")
    assert response.status_code == 200
    assert response.text == "".join(f"data: {i}\n\n" for i in range(4))


def test_good_requests_pass(client: TestClient) -> None:
    assert raw(client, "/v1/chat/completions", json.dumps(CHAT).encode(),
               "application/json; charset=utf-8").json() == {"messages": 1}
    unicode = {"model": "m", "messages": [{"role": "user", "content": "日本語 😀 é"}]}
    assert raw(client, "/v1/chat/completions", json.dumps(unicode).encode()).status_code == 200
    assert client.get("/v1/embeddings").status_code == 405  # GET needs no content type


def test_serve_overload_gets_the_openai_body_and_retry_after() -> None:
    """A full downstream queue (Serve's BackPressureError) is a 503 with the OpenAI body.

    A Serve replica registers its own plain-text handler for it on the app when it starts; the
    routes map it themselves, so that handler (registered here the same way) is never reached.
    """
    from ray.serve.exceptions import BackPressureError
    from starlette.responses import PlainTextResponse

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/full")
    async def full() -> dict:
        raise BackPressureError(num_queued_requests=8, max_queued_requests=8)

    app.add_exception_handler(BackPressureError, lambda *_: PlainTextResponse("plain", status_code=503))
    response = TestClient(app).post("/full", json={})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
