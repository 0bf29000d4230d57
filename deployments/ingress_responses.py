"""The Responses API methods of the ingress deployment (:class:`deployments.ingress.MaasIngress`
inherits them): a response over the chat path, stored on shared storage unless ``store`` is false,
continued by ``previous_response_id`` on any replica, retrieved, listed and deleted by its owner;
a ``background`` one is stored ``queued`` and answered by its runner
(:mod:`deployments.response_runner`), which outlives the replica.

The rules are in ``maas/endpoints/generation/responses.py`` (conversion) and
``maas/endpoints/responses/`` (the store); these methods join them to the chat path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

from deployments.response_runner import ensure_response_runner
from maas.endpoints.generation import responses as responses_rules
from maas.endpoints.generation.protocol import InputItem, ResponseEvent, ResponseObject, ResponsesRequest
from maas.endpoints.generation.response_stream import response_events
from maas.endpoints.responses.api import RUNNING, StoredResponses
from maas.endpoints.responses.protocol import InputItemList, ResponseDeleted
from maas.protocol.errors import ContextLengthExceededError, InvalidRequestError

T = TypeVar("T")
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})


class ResponseMethods:
    """The ingress's Responses API: it expects ``stored_responses`` (:class:`StoredResponses`),
    ``preparation``, and the operations ``chat``, ``open_chat_stream`` and ``_prepare_chat`` of
    :class:`deployments.ingress.MaasIngress`."""

    stored_responses: StoredResponses
    preparation: Any

    async def responses(self, request: ResponsesRequest, owner: str | None = None) -> ResponseObject:
        """A whole response of the Responses API (``stream`` is ignored), over the chat path;
        stored for ``owner`` (an API key id) unless ``store`` is false."""
        if request.background:
            return await self._queue_background(request, owner)
        request = request.model_copy(update={"stream": False})
        context, store = await self._response_context(request, owner)
        chat = responses_rules.chat_request(request, context)
        answer = await _within_context(request, lambda: self.chat(chat))  # type: ignore[attr-defined]
        response = responses_rules.response_from_chat(request, answer, store)
        if store:
            await self.preparation.run(self.stored_responses.save, request, response, context, owner)
        return response

    async def responses_stream(self, request: ResponsesRequest,
                               owner: str | None = None) -> AsyncIterator[ResponseEvent]:
        """A response as the Responses API's events; call through ``handle.options(stream=True)``."""
        async for event in await self.open_responses_stream(request, owner):
            yield event

    async def open_responses_stream(self, request: ResponsesRequest,
                                    owner: str | None = None) -> AsyncIterator[ResponseEvent]:
        """Validate a Responses request and open its stream now (errors before any byte is sent);
        the response is stored before its last event is sent."""
        if request.background:
            raise InvalidRequestError("background with stream is not supported: create the response "
                                      "without stream, then poll it.", "stream")
        context, store = await self._response_context(request, owner)
        chat = responses_rules.chat_request(request, context)
        chunks = await _within_context(request, lambda: self.open_chat_stream(chat))  # type: ignore[attr-defined]
        events = response_events(request, chunks, store)
        return self._stored_events(request, events, context, owner) if store else events

    def retrieve_response(self, response_id: str, owner: str | None = None) -> ResponseObject:
        """A stored response of ``owner`` (blocking: shared storage); the runner of a background
        response not yet ended is started again if it was lost."""
        response = self.stored_responses.retrieve(response_id, owner)
        if response.background and response.status in RUNNING:
            self._start_response_runner(response_id, owner, queued=response.status == "queued")
        return response

    def cancel_response(self, response_id: str, owner: str | None = None) -> ResponseObject:
        """Cancel a background response of ``owner`` not yet ended."""
        return self.stored_responses.cancel(response_id, owner)

    async def _queue_background(self, request: ResponsesRequest, owner: str | None) -> ResponseObject:
        """Store the response ``queued`` and start its runner (a 400 without ``store``); the
        request is prepared now as the chat path prepares it (template, tokens, context length,
        limits), so a bad one is a 4xx here, not a failed response later."""
        if not self.stored_responses.stores(request):
            raise InvalidRequestError("background needs store: a background response is read by "
                                      "retrieving it (leave out store, or send store: true).", "background")
        context, _ = await self._response_context(request, owner)
        chat = responses_rules.chat_request(request, context)
        await _within_context(request, lambda: self._prepare_chat(chat))  # type: ignore[attr-defined]
        response = responses_rules.new_response(request, status="queued", store=True)
        await self.preparation.run(self.stored_responses.queue, request, response, context, owner)
        self._start_response_runner(response.id, owner)
        return response

    def _start_response_runner(self, response_id: str, owner: str | None, queued: bool = True) -> None:
        from ray import serve

        ensure_response_runner(serve.get_replica_context().app_name, self.config.batch_dir,  # type: ignore[attr-defined]
                               response_id, owner, queued)

    def delete_response(self, response_id: str, owner: str | None = None) -> ResponseDeleted:
        """Delete a stored response of ``owner``."""
        return self.stored_responses.delete(response_id, owner)

    def response_input_items(self, response_id: str, owner: str | None = None, limit: int = 20,
                             order: Literal["asc", "desc"] = "desc", after: str | None = None) -> InputItemList:
        """The items used to generate a stored response of ``owner`` (the conversation it
        continued, then its request's), newest first by default."""
        return self.stored_responses.input_items(response_id, owner, limit, order, after)

    async def _response_context(self, request: ResponsesRequest,
                                owner: str | None) -> tuple[list[InputItem], bool]:
        """The items the request continues, and whether its response is stored (read off the
        event loop: shared storage)."""
        return await self.preparation.run(self.stored_responses.prepare, request, owner)

    async def _stored_events(self, request: ResponsesRequest, events: AsyncIterator[ResponseEvent],
                             context: list[InputItem], owner: str | None) -> AsyncIterator[ResponseEvent]:
        async for event in events:
            if event.type in FINAL_EVENTS and event.response is not None:
                await self.preparation.run(self.stored_responses.save, request, event.response, context, owner)
            yield event


async def _within_context(request: ResponsesRequest, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``; a conversation by ``previous_response_id`` that no longer fits the model's context
    is a 400 that says so."""
    try:
        return await call()
    except ContextLengthExceededError as error:
        if not request.previous_response_id:
            raise
        raise ContextLengthExceededError(
            f"The conversation of previous_response_id '{request.previous_response_id}' with this input "
            f"no longer fits the model's context ({error.message}): start a new conversation, or send "
            "fewer items.", "previous_response_id") from None
