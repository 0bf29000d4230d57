"""A chat's chunk stream as the Messages API's event sequence, and how those events and errors are
written as server-sent events.

``message_start`` (with the prompt's ``input_tokens``), ``ping``, then per content block
``content_block_start``, its ``content_block_delta``\\ s (``text_delta`` for text,
``input_json_delta`` for a tool's input) and ``content_block_stop``; then ``message_delta`` with
``stop_reason`` and ``usage``, and ``message_stop``. Each event goes as ``event: <type>`` and
``data: <json>``; an error after the stream started is an ``event: error`` with Anthropic's error
body, and there is no ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from maas.edge.http import EventFraming
from maas.endpoints.messages.convert import stop_reason, usage_of
from maas.endpoints.messages.errors import anthropic_body
from maas.endpoints.messages.protocol import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageDeltaFields,
    MessageEvent,
    MessageResponse,
    MessageStart,
    MessageStop,
    Ping,
    TextContent,
    TextDelta,
    ToolUseContent,
    Usage,
)
from maas.generation_rules.tools import new_call_id
from maas.protocol.base import UsageInfo
from maas.protocol.chat import ChatCompletionChunk, ToolCallDelta
from maas.protocol.errors import MaasError


def _event(item: BaseModel) -> str:
    return f"event: {getattr(item, 'type', 'message')}\ndata: {item.model_dump_json()}\n\n"


def _error(error: MaasError) -> str:
    return f"event: error\ndata: {json.dumps(anthropic_body(error))}\n\n"


ANTHROPIC_EVENTS = EventFraming(event=_event, error=_error, done="")
"""Anthropic's framing: ``event: <type>`` and ``data: <json>`` lines, an error as ``event: error``."""


@dataclass
class Blocks:
    """The content blocks opened so far: the open one's index and kind, and each tool call's block."""

    count: int = 0
    open_kind: str | None = None
    open_call: int | None = None
    called: bool = False
    events: list[MessageEvent] = field(default_factory=list)

    def close(self) -> None:
        if self.open_kind is not None:
            self.events.append(ContentBlockStop(index=self.count - 1))
            self.open_kind, self.open_call = None, None

    def start(self, kind: str, block: TextContent | ToolUseContent, call: int | None = None) -> None:
        self.close()
        self.events.append(ContentBlockStart(index=self.count, content_block=block))
        self.count += 1
        self.open_kind, self.open_call = kind, call

    def text(self, text: str) -> None:
        if self.open_kind != "text":
            self.start("text", TextContent(text=""))
        self.events.append(ContentBlockDelta(index=self.count - 1, delta=TextDelta(text=text)))

    def call(self, delta: ToolCallDelta) -> None:
        if self.open_kind != "tool_use" or self.open_call != delta.index:
            self.called = True
            self.start("tool_use", ToolUseContent(id=delta.id or new_call_id(), name=delta.function.name or ""),
                       delta.index)
        if delta.function.arguments:
            self.events.append(ContentBlockDelta(index=self.count - 1,
                                                 delta=InputJsonDelta(partial_json=delta.function.arguments)))

    def take(self) -> list[MessageEvent]:
        events, self.events = self.events, []
        return events


async def message_events(model: str, input_tokens: int,
                         chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[MessageEvent]:
    """The Messages event sequence of a chat's chunk stream (one choice, usage at the end)."""
    yield MessageStart(message=MessageResponse(model=model, usage=Usage(input_tokens=input_tokens)))
    yield Ping()
    blocks = Blocks()
    finish, stop_string, usage = None, None, UsageInfo.of(input_tokens)
    async for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                blocks.text(choice.delta.content)
            for call in choice.delta.tool_calls or []:
                blocks.call(call)
            finish = choice.finish_reason or finish
            stop_string = choice.stop_reason or stop_string
        for event in blocks.take():
            yield event
    blocks.close()
    for event in blocks.take():
        yield event
    reason, sequence = stop_reason(finish, stop_string, blocks.called)
    yield MessageDelta(delta=MessageDeltaFields(stop_reason=reason, stop_sequence=sequence), usage=usage_of(usage))
    yield MessageStop()
