"""``/v1/responses``: a Responses request as a chat request, and the chat's answer as a response.

The Responses API is served over the chat path (its template, sampling rules and engines), so
both answer alike; only the shapes differ. Streams become the Responses event sequence:
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``..., ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, ``response.completed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError

from maas.edge.http import validation_error
from maas.endpoints.generation.protocol import (
    IncompleteDetails,
    InputMessage,
    OutputMessage,
    OutputText,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from maas.protocol.base import MAX_MESSAGES, UsageInfo
from maas.protocol.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from maas.protocol.errors import InvalidRequestError

TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def chat_request(request: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request answering ``request`` (400 for what the Responses route does not offer)."""
    for field in ("previous_response_id", "background", "tools"):
        if getattr(request, field):
            raise InvalidRequestError(f"{field} is not supported: responses are not stored, and "
                                      "tools are served by /v1/chat/completions.", field)
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    if isinstance(request.input, list) and len(messages) + len(request.input) > MAX_MESSAGES:
        raise InvalidRequestError(f"input: at most {MAX_MESSAGES - len(messages)} messages with "
                                  f"instructions (a conversation has at most {MAX_MESSAGES}).", "input")
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
    else:
        messages += [{"role": m.role, "content": _text_of(m, i)} for i, m in enumerate(request.input)]
    text_format = request.text.format if request.text else None
    try:
        return ChatCompletionRequest(
            model=request.model, messages=messages, max_completion_tokens=request.max_output_tokens,
            temperature=request.temperature, top_p=request.top_p, stream=request.stream,
            stream_options={"include_usage": True} if request.stream else None, user=request.user,
            response_format=text_format.response_format() if text_format else None)
    except ValidationError as exc:  # a rule of chat that the Responses schema does not state
        raise validation_error(exc.errors()) from None


def _text_of(message: InputMessage, index: int) -> str:
    if isinstance(message.content, str):
        return message.content
    for j, part in enumerate(message.content):
        if part.type not in TEXT_PARTS or part.text is None:
            raise InvalidRequestError(
                f"input[{index}].content[{j}] is {part.type!r}: this model takes text only "
                "(input_text).", f"input[{index}].content[{j}]")
    return "".join(part.text or "" for part in message.content)


def response_usage(usage: UsageInfo) -> ResponseUsage:
    return ResponseUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                         total_tokens=usage.total_tokens)


def new_response(request: ResponsesRequest, status: str = "completed") -> ResponseObject:
    """A response object echoing the request's settings, with no output yet."""
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else None
    return ResponseObject(
        model=request.model, status=status, instructions=request.instructions,  # type: ignore[arg-type]
        max_output_tokens=request.max_output_tokens, temperature=request.temperature,
        top_p=request.top_p, metadata=request.metadata or {},
        **({"text": text} if text else {}))


def finished(response: ResponseObject, message: OutputMessage, finish_reason: str | None,
             usage: UsageInfo | None) -> ResponseObject:
    """``response`` with its one output message, its status and usage set."""
    incomplete = finish_reason == "length"
    message.status = "incomplete" if incomplete else "completed"
    response.output = [message]
    response.status = "incomplete" if incomplete else "completed"
    response.incomplete_details = IncompleteDetails(reason="max_output_tokens") if incomplete else None
    response.usage = response_usage(usage) if usage else None
    return response


def response_from_chat(request: ResponsesRequest, answer: ChatCompletionResponse) -> ResponseObject:
    """The whole response of a chat answer."""
    choice = answer.choices[0]
    message = OutputMessage(content=[OutputText(text=choice.message.content or "")])
    return finished(new_response(request), message, choice.finish_reason, answer.usage)


async def response_events(request: ResponsesRequest,
                          chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[ResponseEvent]:
    """The Responses event sequence of a chat's chunk stream."""
    response = new_response(request, status="in_progress")
    message = OutputMessage(status="in_progress")
    counter = iter(range(1 << 62))

    def event(type_: str, **fields: object) -> ResponseEvent:
        return ResponseEvent(type=f"response.{type_}", sequence_number=next(counter), **fields)

    where = {"item_id": message.id, "output_index": 0, "content_index": 0}
    yield event("created", response=response.model_copy(deep=True))
    yield event("in_progress", response=response.model_copy(deep=True))
    yield event("output_item.added", output_index=0, item=message.model_copy(deep=True))
    yield event("content_part.added", part=OutputText(text=""), **where)
    text, finish_reason, usage = [], None, None
    async for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish_reason = choice.finish_reason or finish_reason
            if choice.delta.content:
                text.append(choice.delta.content)
                yield event("output_text.delta", delta=choice.delta.content, **where)
    part = OutputText(text="".join(text))
    yield event("output_text.done", text=part.text, **where)
    yield event("content_part.done", part=part, **where)
    message.content = [part]
    response = finished(response, message, finish_reason, usage)
    yield event("output_item.done", output_index=0, item=message)
    yield event("completed" if response.status == "completed" else "incomplete", response=response)
