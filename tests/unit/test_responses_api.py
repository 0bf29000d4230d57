"""/v1/responses as the chat path: request conversion, whole answers and the event sequence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from maas.endpoints.generation.protocol import ResponsesRequest
from maas.endpoints.generation.responses import chat_request, response_events, response_from_chat
from maas.protocol.base import UsageInfo
from maas.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ResponseMessage,
)
from maas.protocol.errors import InvalidRequestError


def test_input_and_instructions_become_chat_messages() -> None:
    chat = chat_request(ResponsesRequest(model="m", input="Hi", instructions="Be brief.",
                                         max_output_tokens=9, temperature=0))
    assert [(m.role, m.text()) for m in chat.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert chat.max_completion_tokens == 9 and chat.temperature == 0 and not chat.stream
    turns = ResponsesRequest(model="m", stream=True, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "a"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
        {"role": "user", "content": "c"}], text={"format": {"type": "json_schema", "name": "x",
                                                           "schema": {"type": "object"}}})
    chat = chat_request(turns)
    assert [m.text() for m in chat.messages] == ["a", "b", "c"]
    assert chat.stream and chat.stream_options.include_usage
    assert chat.response_format.json_schema.json_schema == {"type": "object"}


@pytest.mark.parametrize("fields, param", [
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f"}], "stream": True}, "stream"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0]"),
])
def test_what_the_route_does_not_offer_is_a_400_naming_the_parameter(fields: dict, param: str) -> None:
    request = ResponsesRequest.model_validate({"model": "m", "input": "Hi", **fields})
    with pytest.raises(InvalidRequestError) as error:
        chat_request(request)
    assert error.value.param == param


def test_a_chat_answer_becomes_a_response() -> None:
    answer = ChatCompletionResponse(model="m", usage=UsageInfo.of(5, 2), choices=[
        ChatChoice(index=0, message=ResponseMessage(content="Paris."), finish_reason="stop")])
    response = response_from_chat(ResponsesRequest(model="m", input="Capital?"), answer)
    assert response.status == "completed" and response.output[0].content[0].text == "Paris."
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (5, 2, 7)
    answer.choices[0].finish_reason = "length"
    cut = response_from_chat(ResponsesRequest(model="m", input="Capital?"), answer)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def test_a_chat_stream_becomes_the_responses_event_sequence() -> None:
    async def chunks() -> AsyncIterator[ChatCompletionChunk]:
        for text, reason in (("Par", None), ("is.", "stop")):
            yield ChatCompletionChunk(id="c", created=0, model="m", choices=[
                ChatChunkChoice(index=0, delta=ChatDelta(content=text), finish_reason=reason)])
        yield ChatCompletionChunk(id="c", created=0, model="m", choices=[], usage=UsageInfo.of(5, 2))

    async def collect() -> list:
        return [e async for e in response_events(ResponsesRequest(model="m", input="x", stream=True), chunks())]

    events = asyncio.run(collect())
    assert [e.type.removeprefix("response.") for e in events] == [
        "created", "in_progress", "output_item.added", "content_part.added", "output_text.delta",
        "output_text.delta", "output_text.done", "content_part.done", "output_item.done", "completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.delta) == events[6].text == "Paris."
    assert events[-1].response.output[0].content[0].text == "Paris." and events[-1].usage.total_tokens == 7
    assert events[0].usage is None
