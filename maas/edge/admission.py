"""One admission path for every operation: the models it will use, checked against the API key,
and the tokens of its answer charged to the key.

The key itself (401) and its request rate (429) are checked before any route runs, by
:class:`maas.edge.auth.AuthMiddleware`. What a route adds is which models an operation uses, defaults
resolved (a pipeline's default generator, both models of a moderated chat, each branch of
analyze), and what the answer cost. Routes get both from one decorator, :func:`admitted`, so
no route calls the checks by hand and none can forget one: ``tests/unit`` walks every route of
the app and fails on one without it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from maas.edge.auth import KeyAuth, authorize_model, request_key
from maas.edge.fair_share import admit_turn
from maas.edge.http import OPENAI_EVENTS, EventFraming, set_request_model, sse_events
from maas.edge.metering import TokenMeter, metering
from maas.protocol.errors import PermissionDeniedError, StreamTimeoutError

ADMITTED = "__maas_admitted__"
"""Set on every route function wrapped by :func:`admitted`."""


@dataclass
class Answer:
    """What an admitted route returns when it needs more than a body: headers, or a stream of
    wire models (sent as server-sent events, in ``framing``: OpenAI's unless said)."""

    content: Any
    headers: dict[str, str] = field(default_factory=dict)
    framing: EventFraming = OPENAI_EVENTS


UNKNOWN_MODEL = "unknown"
"""The ``model`` label of a request that names no served model."""


def metric_model(model: str, served: Collection[str]) -> str:
    """The ``model`` label of a request's metrics: a served model's name (a pinned version,
    ``sentiment/v2``, counts as ``sentiment``), anything else :data:`UNKNOWN_MODEL`. Labels never
    hold a client's string: the metrics actor keeps every label set it sees, forever."""
    if model in served:
        return model
    base = model.rpartition("/")[0]
    return base if base in served else UNKNOWN_MODEL


def admit_models(request: Any, models: list[str], served: Collection[str] = ()) -> None:
    """403 unless the request's key may use every one of ``models``; labels the request's
    metrics with the first (:func:`metric_model` of the ``served`` names). A pinned version
    (``sentiment/v1``) is allowed when its model is."""
    if models:
        set_request_model(request, metric_model(models[0], served))
    for model in models:
        try:
            authorize_model(request, model)
        except PermissionDeniedError:
            base = model.rpartition("/")[0]
            if not base:
                raise
            authorize_model(request, base)


def usage_tokens(item: Any) -> int | None:
    """The total tokens of a wire model's ``usage``, if it has one."""
    usage = getattr(item, "usage", None)
    return None if usage is None else int(usage.total_tokens)


def request_meter(request: Any, auth: KeyAuth) -> TokenMeter:
    """The meter charging the tokens of ``request`` to its key (:mod:`maas.edge.metering`)."""
    return TokenMeter(lambda tokens: auth.charge(request, tokens))


async def charged(meter: TokenMeter, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass a stream through; settle ``meter`` with its last ``usage`` when it ends, and charge
    what was produced when it is cut off (the client went away)."""
    tokens = None
    try:
        async for item in items:
            tokens = usage_tokens(item) or tokens
            yield item
        meter.settle(tokens)
    finally:
        meter.flush()


async def within(items: AsyncIterator[Any], seconds: float | None) -> AsyncIterator[Any]:
    """Pass a stream through for at most ``seconds`` (None: no limit). Past them the stream is
    closed, which cancels its calls into the deployments and so aborts its engine work
    (:mod:`maas.serving.calls`), and :class:`StreamTimeoutError` is raised: the stream's last event.

    Past the limit while waiting for the next item, that wait is cancelled through the whole chain
    of streams at once; past it while the client reads, the chain is closed at its ``yield`` and
    its inner streams are closed by asyncio's async-generator finalizer a few loop turns later."""
    if seconds is None:
        async for item in items:
            yield item
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while True:
            if loop.time() >= deadline:
                raise stream_timeout(seconds)
            try:
                async with asyncio.timeout_at(deadline) as timer:
                    item = await anext(items)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not timer.expired():  # the stream's own error, not the limit
                    raise
                raise stream_timeout(seconds) from None
            yield item
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


def stream_timeout(seconds: float) -> StreamTimeoutError:
    return StreamTimeoutError(f"The stream ran past the service's limit of {seconds:g} s and was ended; "
                              "ask for fewer tokens, or do not stream.")


def admitted(route: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The decorator of every model route ``route(body, request)`` of the app.

    The app (``request.app.state``) holds the ``ingress`` and the ``key_auth``. Before the route:
    ``await ingress.models_used(body, key_id)`` are admitted (:func:`admit_models`, labelled
    among ``ingress.served_models()``). After it: a wire model's
    ``usage`` is charged to the key; an :class:`Answer` whose content is an async iterator
    becomes server-sent events whose usage is charged when the stream ends, ended after the app's
    ``max_stream_s`` (``request.app.state``) if it runs longer (:func:`within`). While the route
    runs, the request's :class:`~maas.edge.metering.TokenMeter` is current: tokens generated for
    it are charged even if the client goes away first (:mod:`maas.edge.metering`). The request
    takes a turn of its tenant's fair share first (:mod:`maas.edge.fair_share`: a 429 when over
    it past the wait) and gives it back when its answer ends, a stream included.
    """

    @functools.wraps(route)
    async def admitted_route(body: Any, request: Any) -> Any:
        state = request.app.state
        key = request_key(request)
        models = await state.ingress.models_used(body, key.id if key else None)
        admit_models(request, models, state.ingress.served_models())
        turn = await admit_turn(request, key)  # its tenant's fair share: may wait, then 429
        meter = request_meter(request, state.key_auth)
        try:
            with metering(meter), turn.current():
                result = await route(body, request)
            return turn.held_by(_respond(request, meter, result))
        except BaseException:
            turn.end()
            raise

    setattr(admitted_route, ADMITTED, True)
    return admitted_route


def event_stream(items: AsyncIterator[Any], framing: EventFraming = OPENAI_EVENTS) -> Any:
    """A server-sent-events response of a stream of wire models."""
    from fastapi.responses import StreamingResponse

    return StreamingResponse(sse_events(items, framing), media_type="text/event-stream")


def json_answer(model: BaseModel) -> Any:
    """A wire model as a JSON response, serialized once by pydantic: FastAPI would validate the
    model against the route's ``response_model`` again and dump it through a Python dict."""
    from fastapi.responses import Response

    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


def _respond(request: Any, meter: TokenMeter, result: Any) -> Any:
    if not isinstance(result, Answer):
        meter.settle(usage_tokens(result))
        return json_answer(result) if isinstance(result, BaseModel) else result
    if isinstance(result.content, AsyncIterator):
        seconds = getattr(request.app.state, "max_stream_s", None)
        response = event_stream(charged(meter, within(result.content, seconds)), result.framing)
    else:
        from fastapi.responses import JSONResponse

        meter.settle(usage_tokens(result.content))
        response = JSONResponse(result.content.model_dump(mode="json"))
    response.headers.update(result.headers)
    return response
