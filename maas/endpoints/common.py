"""What every router shares: its route class, the ingress of a request, streamed answers' docs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from maas.edge.auth import request_key
from maas.edge.http import ServeErrorRoute


def new_router() -> APIRouter:
    """A router whose routes answer Serve's overload errors through the one error mapping."""
    return APIRouter(route_class=ServeErrorRoute)


def ingress_of(request: Request) -> Any:
    """The ingress deployment (:class:`deployments.ingress.MaasIngress`) serving this request."""
    return request.app.state.ingress


def owner_of(request: Request) -> str | None:
    """The id of the request's API key: the owner of what it stores (None when the service has no keys)."""
    key = request_key(request)
    return key.id if key else None


def streamed(model: type) -> dict[int | str, dict[str, Any]]:
    """OpenAPI of a route answering ``model`` as JSON, or with ``stream: true`` server-sent events."""
    return {200: {"model": model, "description": "The answer; with `stream: true`, server-sent events "
                  "(`data: {chunk}` lines, then `data: [DONE]`). A stream that fails after it started, "
                  "or runs past the service's limit (`stream_timeout`), ends with one `data:` event "
                  "holding the error body, then `data: [DONE]`.",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
