"""Edge checks of every HTTP request, before any engine work: body size, content type, deadline.

A pure ASGI middleware (streams and client disconnects pass through untouched):

* ``POST`` bodies must be declared JSON (``Content-Type: application/json``), else 415; the
  upload routes (``/v1/files``) take ``multipart/form-data`` instead;
* a body over ``max_body_bytes`` (``max_upload_bytes`` on an upload route) is refused with 413:
  at once when ``Content-Length`` says so, else as soon as the bytes read pass the limit;
* a request whose response has not started within ``request_timeout_s`` is cancelled (which
  cancels its calls into the deployments and aborts their engine work) and answered with 504.
  A stream counts as started once its first bytes are sent; from then on it is bounded by its
  ``max_tokens`` and by ``max_stream_s`` (:func:`maas.edge.admission.within`), and aborted when
  the client goes away.

The limits are set by the ingress replica from its config (:class:`RequestLimits`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException

from maas.edge.http import error_response
from maas.protocol.errors import PayloadTooLargeError, RequestTimeoutError, UnsupportedMediaTypeError

JSON_MEDIA_TYPE = "application/json"
MULTIPART_MEDIA_TYPE = "multipart/form-data"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass
class RequestLimits:
    """Limits applied to every request of an ingress replica."""

    max_body_bytes: int = 4 * 1024 * 1024
    request_timeout_s: float | None = 600.0
    max_upload_bytes: int = 100 * 1024 * 1024
    upload_paths: frozenset[str] = frozenset({"/v1/files"})


class RequestGuardMiddleware:
    """Refuse oversized or non-JSON bodies; answer 504 past the deadline (see module doc)."""

    def __init__(self, app: Any, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_and_mark(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        await self._run_with_deadline(scope, self._bounded(receive, scope), send_and_mark, started)

    def _refusal(self, scope: dict[str, Any]) -> Exception | None:
        if scope.get("method") not in BODY_METHODS:
            return None
        content_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
        expected = MULTIPART_MEDIA_TYPE if self._is_upload(scope) else JSON_MEDIA_TYPE
        if content_type != expected:
            shown = content_type or "none"
            return UnsupportedMediaTypeError(
                f"The request body must have Content-Type: {expected} (got {shown})."
            )
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self._limit(scope):
            return self._too_large(scope)
        return None

    def _is_upload(self, scope: dict[str, Any]) -> bool:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        return path.removeprefix(root) in self.limits.upload_paths

    def _limit(self, scope: dict[str, Any]) -> int:
        return self.limits.max_upload_bytes if self._is_upload(scope) else self.limits.max_body_bytes

    def _bounded(self, receive: Any, scope: dict[str, Any]) -> Any:
        """``receive`` that raises 413 once the body read passes the limit."""
        seen, limit = 0, self._limit(scope)

        async def receive_bounded() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # HTTPException: FastAPI re-raises it as is from its body parsing (any other
                    # error there becomes a 400); the one error mapping turns it into a 413.
                    raise HTTPException(413, self._too_large(scope).message)
            return message

        return receive_bounded

    async def _run_with_deadline(self, scope: dict[str, Any], receive: Any, send: Any,
                                 started: asyncio.Event) -> None:
        timeout = self.limits.request_timeout_s
        call = asyncio.ensure_future(self.app(scope, receive, send))
        if timeout is None:
            await call
            return
        deadline = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({call, deadline}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if call.done() or started.is_set():
                await call
                return
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            await error_response(RequestTimeoutError(
                f"The request did not complete within the service's {timeout:g} s deadline."
            ))(scope, receive, send)
        finally:
            deadline.cancel()
            if not call.done():  # the client went away or the server is stopping
                call.cancel()

    def _too_large(self, scope: dict[str, Any]) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than the limit of {self._limit(scope)} bytes."
        )


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header's value (first occurrence), or None."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def install_request_guard(app: Any, limits: RequestLimits) -> None:
    """Apply ``limits`` to every request of ``app``."""
    app.add_middleware(RequestGuardMiddleware, limits=limits)
