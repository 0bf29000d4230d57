"""A chat's chunk stream as the Responses API's event sequence.

``response.created``, ``response.in_progress``; then each output item as it first appears: a
message (``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``...) or a function call (``response.output_item.added``,
``response.function_call_arguments.delta``...); when the stream ends each item is closed in order
(``response.output_text.done`` and ``response.content_part.done``, or
``response.function_call_arguments.done``; then ``response.output_item.done``), and
``response.completed`` (``response.incomplete`` when cut by ``max_output_tokens``) carries the
whole response. An answer with neither text nor calls is one empty message, as a whole answer is.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

from maas.endpoints.generation.protocol import (
    FunctionCallItem,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseEvent,
    ResponsesRequest,
)
from maas.endpoints.generation.responses import finished, new_response
from maas.generation_rules.tools import new_call_id
from maas.protocol.base import UsageInfo
from maas.protocol.chat import ChatCompletionChunk, ChatDelta


class ResponseStream:
    """The output items of one streamed response, and the events that build them."""

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.output: list[OutputItem] = []
        self.message: OutputMessage | None = None
        self.text: list[str] = []
        self.calls: dict[int, FunctionCallItem] = {}

    def event(self, type_: str, **fields: object) -> ResponseEvent:
        return ResponseEvent(type=f"response.{type_}", sequence_number=next(self.counter), **fields)

    def add(self, delta: ChatDelta) -> Iterator[ResponseEvent]:
        """The events of one chunk's delta: text, then tool-call fragments."""
        if delta.content:
            if self.message is None:
                yield from self._open_message()
            self.text.append(delta.content)
            yield self.event("output_text.delta", delta=delta.content, **self._where(self.message))
        for fragment in delta.tool_calls or []:
            call = self.calls.get(fragment.index)
            if call is None:
                call = FunctionCallItem(call_id=fragment.id or new_call_id(), name=fragment.function.name or "",
                                        arguments="", status="in_progress")
                self.calls[fragment.index] = call
                self.output.append(call)
                yield self.event("output_item.added", output_index=len(self.output) - 1,
                                 item=call.model_copy(deep=True))
            if fragment.function.arguments:
                call.arguments += fragment.function.arguments
                yield self.event("function_call_arguments.delta", delta=fragment.function.arguments,
                                 item_id=call.id, output_index=self.output.index(call))

    def close(self) -> Iterator[ResponseEvent]:
        """The events that end each item (an empty message first if there was no output)."""
        if not self.output:
            yield from self._open_message()
        for index, item in enumerate(self.output):
            if isinstance(item, OutputMessage):
                part = OutputText(text="".join(self.text))
                item.content = [part]
                yield self.event("output_text.done", text=part.text, **self._where(item))
                yield self.event("content_part.done", part=part, **self._where(item))
            else:
                yield self.event("function_call_arguments.done", arguments=item.arguments, item_id=item.id,
                                 output_index=index)

    def items_done(self) -> Iterator[ResponseEvent]:
        for index, item in enumerate(self.output):
            yield self.event("output_item.done", output_index=index, item=item)

    def _open_message(self) -> Iterator[ResponseEvent]:
        self.message = OutputMessage(status="in_progress")
        self.output.append(self.message)
        yield self.event("output_item.added", output_index=len(self.output) - 1,
                         item=self.message.model_copy(deep=True))
        yield self.event("content_part.added", part=OutputText(text=""), **self._where(self.message))

    def _where(self, message: OutputMessage | None) -> dict[str, object]:
        assert message is not None
        return {"item_id": message.id, "output_index": self.output.index(message), "content_index": 0}


async def response_events(request: ResponsesRequest, chunks: AsyncIterator[ChatCompletionChunk],
                          store: bool = False) -> AsyncIterator[ResponseEvent]:
    """The Responses event sequence of a chat's chunk stream."""
    response = new_response(request, status="in_progress", store=store)
    stream = ResponseStream()
    yield stream.event("created", response=response.model_copy(deep=True))
    yield stream.event("in_progress", response=response.model_copy(deep=True))
    finish_reason: str | None = None
    usage: UsageInfo | None = None
    async for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish_reason = choice.finish_reason or finish_reason
            for event in stream.add(choice.delta):
                yield event
    for event in stream.close():
        yield event
    response = finished(response, stream.output, finish_reason, usage)
    for event in stream.items_done():
        yield event
    yield stream.event("completed" if response.status == "completed" else "incomplete", response=response)
