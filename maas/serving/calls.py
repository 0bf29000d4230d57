"""Calls from the ingress into the deployments that end with their caller.

Ray Serve cancels a replica's downstream calls when *its own* request is cancelled (a client
disconnect), but not when only the awaiting task is: a request cut off by the ingress deadline
would leave its generation running to the end. These helpers cancel the call with its caller.

A stream is *opened* by awaiting its first item before any byte goes to the client, so an
overloaded or failing generator gets a proper status (503 with ``Retry-After``) instead of a
200 stream that ends in an error event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

T = TypeVar("T")


def with_session(handle: DeploymentHandle) -> DeploymentHandle:
    """``handle`` carrying the session id of the request this replica serves, if it has one: the
    ``x-session-id`` header, which Serve's proxy reads (``RAY_SERVE_SESSION_ID_HEADER_KEY`` renames
    it) but does not pass on to calls the ingress makes. A prefix-routed generator pins a session
    to a replica (:mod:`maas.serving.prefix_affinity`); other routers ignore it."""
    from ray.serve.context import _get_serve_request_context

    context = _get_serve_request_context()
    session = context.session_id if context is not None else ""
    return handle.options(session_id=session) if session else handle


async def result_of(response: DeploymentResponse) -> Any:
    """The result of a handle call; cancelling the caller cancels the call (and its engine work)."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


async def results_of(responses: list[DeploymentResponse]) -> list[Any]:
    """The results of several handle calls; one failing (or the caller cancelled) cancels the rest."""
    return await _all_or_cancel([result_of(r) for r in responses], responses)


async def open_streams(streams: list[DeploymentResponseGenerator]) -> list[AsyncIterator[Any]]:
    """:func:`open_stream` for several calls; one failing (or the caller cancelled) cancels the rest."""
    return await _all_or_cancel([open_stream(s) for s in streams], streams)


async def _all_or_cancel(waits: list[Awaitable[T]], calls: Sequence[Any]) -> list[T]:
    """Await all of ``waits``; if one fails or the caller is cancelled, cancel every one of ``calls``."""
    try:
        return list(await asyncio.gather(*waits))
    except BaseException:
        for call in calls:
            call.cancel()
        raise


async def open_stream(stream: DeploymentResponseGenerator) -> AsyncIterator[Any]:
    """Wait for a streaming call's first item (errors surface here), then iterate all of it."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return _empty()
    except asyncio.CancelledError:
        stream.cancel()
        raise
    return _prepend(first, stream)


async def _prepend(first: T, rest: DeploymentResponseGenerator) -> AsyncIterator[T]:
    """``first``, then the rest of the call's items; closed (or cancelled) before its end, the
    call is cancelled, which aborts its engine work (e.g. a stream past ``max_stream_s``)."""
    finished = False
    try:
        yield first
        async for item in rest:
            yield item
        finished = True
    finally:
        if not finished:
            rest.cancel()


async def _empty() -> AsyncIterator[Any]:
    return
    yield  # an async generator with no items
