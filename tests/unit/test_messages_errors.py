"""The Messages routes through the real ingress app (fake generator, see ingress_fakes.py): keys from
``x-api-key``, errors in Anthropic's body whoever raises them (the edge, validation, the route, a
stream that fails), Anthropic's server-sent events, and the OpenAPI schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from maas.config import IngressConfig
from maas.edge import key_file
from maas.endpoints.app import build_app
from maas.endpoints.messages.errors import MESSAGES_PATHS, anthropic_body, error_type, from_openai_body
from maas.protocol.errors import ModelNotFoundError, RateLimitError, ServiceUnavailableError
from tests.unit.ingress_fakes import PROMPT_TOKENS, EngineStream, Generator, Prompts, app, charged, ingress

MESSAGE = {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("status, kind", [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (415, "invalid_request_error"),
    (429, "rate_limit_error"), (500, "api_error"), (503, "overloaded_error"), (504, "timeout_error")])
def test_each_status_has_anthropics_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind
    body = json.loads(from_openai_body(status, json.dumps({"error": {"message": "m", "type": "x"}}).encode()))
    assert body == {"type": "error", "error": {"type": kind, "message": "m"}}


def test_maas_errors_and_unreadable_bodies_map_too() -> None:
    assert anthropic_body(ModelNotFoundError("no such model")) == {
        "type": "error", "error": {"type": "not_found_error", "message": "no such model"}}
    assert anthropic_body(RateLimitError("slow down"))["error"]["type"] == "rate_limit_error"
    assert anthropic_body(ServiceUnavailableError("busy"))["error"]["type"] == "overloaded_error"
    assert json.loads(from_openai_body(500, b"not json"))["error"]["type"] == "api_error"


def call(asgi: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(main())


def assert_anthropic(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"], body
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}
    return body


def test_keys_come_from_x_api_key_or_bearer_and_a_missing_one_is_anthropics_401(tmp_path: Path) -> None:
    asgi, secret = app(tmp_path, {"chat": Generator()})
    missing = call(asgi, "POST", "/v1/messages", json=MESSAGE)
    assert "x-api-key" in assert_anthropic(missing, 401, "authentication_error")["error"]["message"]
    assert missing.headers["x-maas-error-code"] == "invalid_api_key"
    assert_anthropic(call(asgi, "POST", "/v1/messages", json=MESSAGE, headers={"x-api-key": "maas-nope"}),
                     401, "authentication_error")
    for headers in ({"x-api-key": secret}, {"Authorization": f"Bearer {secret}"}):
        answered = call(asgi, "POST", "/v1/messages", json=MESSAGE, headers=headers)
        assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["content"] == [{"type": "text", "text": "ok"}] and body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": PROMPT_TOKENS, "output_tokens": 2}
    assert charged(asgi) == 2 * (PROMPT_TOKENS + 2)  # both answers charged to the key
    other = call(asgi, "POST", "/v1/chat/completions", json={**MESSAGE, "model": "chat"})
    assert other.status_code == 401 and set(other.json()) == {"error"}  # other routes keep OpenAI's body
    chat = call(asgi, "POST", "/v1/chat/completions", json=MESSAGE, headers={"x-api-key": secret})
    assert chat.status_code == 200  # x-api-key on every route


def test_route_validation_and_edge_errors_have_anthropics_body(tmp_path: Path) -> None:
    asgi, secret = app(tmp_path, {"chat": Generator()})
    key = {"x-api-key": secret}
    for path in sorted(MESSAGES_PATHS):
        unknown = call(asgi, "POST", path, json={**MESSAGE, "model": "nope"}, headers=key)
        assert "nope" in assert_anthropic(unknown, 404, "not_found_error")["error"]["message"]
    no_max = {k: v for k, v in MESSAGE.items() if k != "max_tokens"}
    assert "max_tokens" in assert_anthropic(call(asgi, "POST", "/v1/messages", json=no_max, headers=key),
                                            400, "invalid_request_error")["error"]["message"]
    image = {**MESSAGE, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}
    assert_anthropic(call(asgi, "POST", "/v1/messages", json=image, headers=key), 400, "invalid_request_error")
    bad_choice = {**MESSAGE, "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                  "tool_choice": {"type": "tool", "name": "g"}}
    assert_anthropic(call(asgi, "POST", "/v1/messages", json=bad_choice, headers=key), 400, "invalid_request_error")
    long = {**MESSAGE, "messages": [{"role": "user", "content": "x" * 5000}]}  # the fake's context: 1,000 chars
    assert_anthropic(call(asgi, "POST", "/v1/messages", json=long, headers=key), 400, "invalid_request_error")
    assert_anthropic(call(asgi, "POST", "/v1/messages", content=b"{", headers={**key, "content-type": "text/plain"}),
                     415, "invalid_request_error")
    assert_anthropic(call(asgi, "POST", "/v1/messages", content=b"{", headers={**key, "content-type": "application/json"}),
                     400, "invalid_request_error")


def test_a_key_over_its_rate_gets_anthropics_429_with_retry_after(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    secret = key_file.add_key(keys, "slow", rpm=1)
    asgi = build_app(ingress({"chat": Generator()}, Prompts()), IngressConfig(api_keys_file=str(keys)))
    asgi.state.ingress.key_auth = asgi.state.key_auth
    asgi.state.recorder._send = lambda events: None
    assert call(asgi, "POST", "/v1/messages", json=MESSAGE, headers={"x-api-key": secret}).status_code == 200
    refused = call(asgi, "POST", "/v1/messages", json=MESSAGE, headers={"x-api-key": secret})
    assert "Rate limit" in assert_anthropic(refused, 429, "rate_limit_error")["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1


def test_count_tokens_counts_the_prompt(tmp_path: Path) -> None:
    asgi, secret = app(tmp_path, {"chat": Generator()})
    body = {k: v for k, v in MESSAGE.items() if k != "max_tokens"}
    counted = call(asgi, "POST", "/v1/messages/count_tokens", json=body, headers={"x-api-key": secret})
    assert counted.status_code == 200 and counted.json() == {"input_tokens": PROMPT_TOKENS}


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent-events body."""
    pairs = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        pairs.append((lines["event"], json.loads(lines["data"])))
    return pairs


def test_a_stream_is_anthropics_events_and_is_charged(tmp_path: Path) -> None:
    asgi, secret = app(tmp_path, {"chat": Generator(delay_s=0, tokens=3)})
    response = call(asgi, "POST", "/v1/messages", json={**MESSAGE, "stream": True}, headers={"x-api-key": secret})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    events = sse(response.text)
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                            "content_block_delta", "content_block_delta", "content_block_stop",
                                            "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"] == {"input_tokens": PROMPT_TOKENS, "output_tokens": 0}
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"] == {"input_tokens": PROMPT_TOKENS, "output_tokens": 3}
    assert charged(asgi) == PROMPT_TOKENS + 3


class FailingStream(EngineStream):
    async def __anext__(self) -> Any:
        if self.produced == 1:
            raise ServiceUnavailableError("The generation engine died; the replica is restarting.")
        return await super().__anext__()


def test_a_stream_that_fails_after_it_started_ends_with_an_error_event(tmp_path: Path) -> None:
    generator = Generator(delay_s=0)
    generator.generate_stream.remote = lambda ids, params: FailingStream(0, 10)
    asgi, secret = app(tmp_path, {"chat": generator})
    response = call(asgi, "POST", "/v1/messages", json={**MESSAGE, "stream": True}, headers={"x-api-key": secret})
    events = sse(response.text)
    assert events[0][0] == "message_start"
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "The generation engine died; the replica is restarting."}})


def test_the_openapi_schema_documents_anthropics_errors_on_the_messages_routes(tmp_path: Path) -> None:
    asgi, _ = app(tmp_path, {"chat": Generator()})
    schema = asgi.openapi()
    for path in MESSAGES_PATHS:
        responses = schema["paths"][path]["post"]["responses"]
        for status in ("400", "401", "404", "429", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/AnthropicErrorResponse"}, (path, status)
    assert "text/event-stream" in schema["paths"]["/v1/messages"]["post"]["responses"]["200"]["content"]
    chat_400 = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["400"]
    assert chat_400["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
