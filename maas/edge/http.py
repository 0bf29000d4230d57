"""HTTP helpers of the ingress: the one error mapping, server-sent events, metrics middleware."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from maas.edge.metrics import MetricsRecorder
from maas.protocol.errors import (
    InvalidRequestError,
    MaasError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    as_maas_error,
    error_body,
    failure_text,
)

logger = logging.getLogger(__name__)

MODEL_SCOPE_KEY = "maas.model"
ADMIN_PATHS = frozenset({"/metrics"})
"""Operator routes: when the service has API keys, only an admin key (``maas keys add --admin``)
reads them; other keys get a 403 (:class:`maas.edge.auth.AuthMiddleware`)."""
ADMIN_ERROR = "The API key is not an admin key (`maas keys add --admin`); only when the service has keys."


def error_response(exc: BaseException) -> Any:
    """The one mapping from any exception to an HTTP response with the OpenAI error body."""
    from fastapi.responses import JSONResponse

    error = as_maas_error(exc)
    if error.status_code in (503, 504):  # overload, restart, deadline: expected, no traceback
        logger.warning("request refused: %s %s", int(error.status_code), error.code)
    elif error.status_code >= 500:
        log_failure("request failed", exc)
    headers = {"x-maas-error-code": error.code or ""}
    if error.status_code == 503:
        headers["Retry-After"] = "1"
    retry_after_s = getattr(error, "retry_after_s", None)  # e.g. maas.edge.auth.RateLimitError (429)
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return JSONResponse(error_body(error), status_code=int(error.status_code), headers=headers)


def log_failure(what: str, exc: BaseException) -> None:
    """Log a server-side failure with its stack and type, not its message: an exception's text
    may quote the request (a pydantic error quotes the input), and no client text is logged."""
    logger.error("%s:\n%s", what, failure_text(exc))


def validation_error(errors: list[dict[str, Any]]) -> InvalidRequestError:
    """A 400 naming the first bad parameter of a FastAPI/pydantic validation failure.

    Of a union (``str | list[str]``) it reports the branch of the value's type (``input: List
    should have at most 256 items``), not that the value is no string."""
    if not errors:
        return InvalidRequestError("The request is invalid.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequestError("The request body is not valid JSON.", code="invalid_json")
    path = _error_path(first)
    if path:
        same_field = [e for e in errors if _error_path(e)[:1] == path[:1]]
        first = next((e for e in same_field if not str(e.get("type", "")).endswith("_type")), first)
        path = _error_path(first)
    param = path[0] if path else None
    where = ".".join(path)
    message = str(first.get("msg", "invalid value"))
    return InvalidRequestError(f"{where}: {message}" if where else message, param)


_UNION_BRANCH = re.compile(r"^(str|int|float|bool|dict|list|none|[a-z-]+\[.*\])$")
"""A union branch in a pydantic error's location (``str``, ``list[str]``, ``function-after[...]``)."""


def _error_path(error: dict[str, Any]) -> list[str]:
    """The parameter path of a validation error: ``body`` and union branch tags left out."""
    return [str(part)[:64] for part in error.get("loc", ())  # a dict key is the client's: cut
            if part != "body" and not (isinstance(part, str) and _UNION_BRANCH.match(part))]


def http_error(status_code: int, detail: str) -> MaasError:
    """Starlette's own HTTP errors (unknown route, wrong method) as maas errors."""
    if status_code == 404:
        return NotFoundError("Not found: no such route.")
    if status_code == 405:
        return MethodNotAllowedError("Method not allowed on this route.")
    if status_code == 413:
        return PayloadTooLargeError(str(detail))
    error = InvalidRequestError(str(detail))
    error.status_code = status_code
    return error


def install_error_handlers(app: Any) -> None:
    """Route every error of a FastAPI app through :func:`error_response`."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_maas_error(_: Any, exc: Exception) -> Any:
        return error_response(exc)

    async def on_validation(_: Any, exc: Exception) -> Any:
        return error_response(validation_error(exc.errors()))  # type: ignore[attr-defined]

    async def on_http(_: Any, exc: Exception) -> Any:
        return error_response(http_error(exc.status_code, exc.detail))  # type: ignore[attr-defined]

    app.add_exception_handler(MaasError, on_maas_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.router.route_class = ServeErrorRoute  # for the routes declared after this call


class ServeErrorRoute(APIRoute):
    """A route that answers Ray Serve's overload errors (a full queue) through the one mapping.

    A Serve replica registers plain-text handlers for them on the app (``503 Service Unavailable``,
    no OpenAI body), which would win over this module's handlers; they are turned into maas's
    503 with ``Retry-After`` inside the route instead.
    """

    def get_route_handler(self) -> Callable[[Any], Coroutine[Any, Any, Any]]:
        handler = super().get_route_handler()

        async def route_handler(request: Any) -> Any:
            try:
                return await handler(request)
            except (BackPressureError, DeploymentUnavailableError) as exc:
                raise as_maas_error(exc) from exc

        return route_handler


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times requests by route; answers what escaped handlers.

    (Pure ASGI, not ``BaseHTTPMiddleware``, so streaming and client disconnects pass through.)
    """

    def __init__(self, app: Any, recorder: MetricsRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "code": ""}

        async def send_and_watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = dict(message.get("headers") or [])
                state["code"] = headers.get(b"x-maas-error-code", b"").decode()
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if state.get("started"):
                raise
            await error_response(exc)(scope, receive, send_and_watch)
        finally:
            self._record(scope, state, time.perf_counter() - start)

    def _record(self, scope: dict[str, Any], state: dict[str, Any], seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        status = str(state["status"])
        events: list[tuple[str, dict[str, str], float]] = [
            ("maas_requests", {"route": route, "model": scope.get(MODEL_SCOPE_KEY, ""), "status": status}, 1),
            ("maas_request_latency_seconds", {"route": route}, seconds),
        ]
        if int(status) >= 400:
            events.append(("maas_request_errors", {"route": route, "status": status, "code": state["code"]}, 1))
        self.recorder.record_many(events)


def install_metrics_middleware(app: Any, recorder: MetricsRecorder) -> None:
    """Count requests and errors and time them by route."""
    app.add_middleware(MetricsMiddleware, recorder=recorder)


def set_request_model(request: Any, model: str) -> None:
    """Label this request's metrics with the model it names."""
    request.scope[MODEL_SCOPE_KEY] = model


@dataclass(frozen=True)
class EventFraming:
    """How a stream of wire models is written as server-sent events: the event of each model,
    the event of an error after the stream started, and the closing event (may be empty)."""

    event: Callable[[BaseModel], str]
    error: Callable[[MaasError], str]
    done: str


def _openai_event(item: BaseModel) -> str:
    return f"{_event_line(item)}data: {item.model_dump_json(exclude_none=True)}\n\n"


def _openai_error(error: MaasError) -> str:
    return f"data: {json.dumps(error_body(error))}\n\n"


OPENAI_EVENTS = EventFraming(event=_openai_event, error=_openai_error, done="data: [DONE]\n\n")
"""OpenAI's framing: ``data: {model}`` events (``event:`` lines for the Responses API's), an error
as one ``data:`` event with the OpenAI error body, then ``data: [DONE]``."""


async def sse_events(items: AsyncIterator[BaseModel], framing: EventFraming = OPENAI_EVENTS) -> AsyncIterator[str]:
    """Server-sent events of a stream of models, ending with ``framing.done`` (``data: [DONE]``).

    An error after the stream started becomes one event (``framing.error``: the OpenAI error body).
    """
    try:
        async for item in items:
            yield framing.event(item)
    except Exception as exc:  # noqa: BLE001 - reported in-band, the status is already sent
        error = as_maas_error(exc)
        if error.status_code >= 500 and error.status_code not in (503, 504):
            log_failure("stream failed", exc)
        else:
            logger.warning("stream ended early: %s %s", int(error.status_code), error.code)
        yield framing.error(error)
    if framing.done:
        yield framing.done


def _event_line(item: BaseModel) -> str:
    """``event: <type>`` for the Responses API's events (named by their ``type``), else nothing."""
    kind = getattr(item, "type", None)
    return f"event: {kind}\n" if isinstance(kind, str) and kind.startswith("response.") else ""


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }},
}
"""The OpenAI error body, as every error of the service is answered (:func:`error_response`)."""

ROUTE_ERRORS: dict[int, str] = {
    400: "Invalid request: a parameter is missing, malformed or out of range (never 422); or the "
         "request asks for more work than one request may (request_too_large: sequences, tokens, "
         "log probabilities, tools, schema or text to tokenize over the service's limits).",
    401: "Missing or unknown API key (when the service has keys).",
    403: "The API key may not use a model this request needs.",
    404: "Unknown model, or a model without this capability.",
    409: "The object is in use: e.g. a file that an active batch reads (delete it once the batch ends).",
    413: "Request body over the size limit, or (an upload) over the API key's storage quota.",
    415: "Request body not declared as JSON.",
    429: "Over the API key's requests or tokens per minute, or its open batches; or over its fair share "
         "(an API key's, else a client address's): too many requests or generated sequences in flight "
         "(too_many_requests_in_flight, too_many_sequences_in_flight) after a bounded wait; see Retry-After.",
    503: "Overloaded, restarting, or the model is not ready yet (model_not_ready); see Retry-After.",
    504: "No answer within the request deadline (request_timeout).",
}

CONFLICT_ROUTES = frozenset({("delete", "/v1/files/{file_id}")})
"""The routes that answer 409 (:class:`maas.protocol.errors.ConflictError`)."""


def truthful_openapi(app: Any) -> None:
    """Make ``app``'s OpenAPI schema say what the service answers: the OpenAI error body for
    each status a route can return, and no 422 (validation errors are 400 here)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["ErrorResponse"] = ERROR_SCHEMA
            for path, item in schema.get("paths", {}).items():
                for method, operation in item.items():
                    _document_errors(path, method, operation)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _document_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    responses.pop("422", None)
    if path == "/health":
        statuses = [503]
    elif method in ("get", "delete"):  # a bad query parameter, an unknown id
        statuses = ([400] * bool(operation.get("parameters")) + [401] + [403] * (path in ADMIN_PATHS)
                    + [404] * ("{" in path) + [429])
    else:
        statuses = [s for s in ROUTE_ERRORS if s != 409]
    if (method, path) in CONFLICT_ROUTES:
        statuses.append(409)
    for status in statuses:
        description = ADMIN_ERROR if status == 403 and path in ADMIN_PATHS else ROUTE_ERRORS[status]
        declared = responses.get(str(status), {}).get("content", {}).get("application/json", {})
        schema = declared.get("schema") or {"$ref": "#/components/schemas/ErrorResponse"}  # a route's own body
        responses[str(status)] = {"description": description, "content": {"application/json": {"schema": schema}}}
