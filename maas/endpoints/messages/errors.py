"""Anthropic's error body on the Messages routes: ``{"type": "error", "error": {"type", "message"}}``.

Every error of the service goes through one mapping (:func:`maas.edge.http.error_response`), which
writes the OpenAI body; the refusals of the edge (API key, rate limit, body size, deadline) are
written before any route runs. :class:`AnthropicErrorsMiddleware` rewrites the body of every error
answer on :data:`MESSAGES_PATHS` into Anthropic's, whoever wrote it, keeping its status and
headers (``Retry-After``, ``x-maas-error-code``: the maas ``code``). Other routes keep OpenAI's body.
"""

from __future__ import annotations

import json
from typing import Any

from maas.protocol.errors import MaasError

MESSAGES_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
"""Anthropic's error ``type`` by HTTP status (any other 4xx: ``invalid_request_error``, 5xx: ``api_error``)."""


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def anthropic_body(error: MaasError) -> dict[str, Any]:
    """Anthropic's body of a maas error."""
    return anthropic_error(int(error.status_code), error.message)


def from_openai_body(status: int, body: bytes) -> bytes:
    """The Anthropic body of an OpenAI error body (``{"error": {"message", ...}}``)."""
    try:
        message = str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = "The request failed."
    return json.dumps(anthropic_error(status, message)).encode()


class AnthropicErrorsMiddleware:
    """Pure ASGI middleware: error answers (status >= 400, JSON) on :data:`MESSAGES_PATHS` get
    Anthropic's body. Install it outermost, so that it sees the edge's refusals too."""

    def __init__(self, app: Any, paths: frozenset[str] = MESSAGES_PATHS) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _path(scope) not in self.paths:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        body = bytearray()

        async def rewrite(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400 and _is_json(message):
                held["start"] = message
                return
            if "start" not in held or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_rewritten(send, held.pop("start"), bytes(body))

        await self.app(scope, receive, rewrite)


async def _send_rewritten(send: Any, start: dict[str, Any], body: bytes) -> None:
    new_body = from_openai_body(start["status"], body)
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new_body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": new_body, "more_body": False})


def _is_json(message: dict[str, Any]) -> bool:
    headers = dict((k.lower(), v) for k, v in message.get("headers", []))
    return headers.get(b"content-type", b"").startswith(b"application/json")


def _path(scope: dict[str, Any]) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def install_anthropic_errors(app: Any) -> None:
    """Answer errors of the Messages routes in Anthropic's shape (outermost middleware)."""
    app.add_middleware(AnthropicErrorsMiddleware)
