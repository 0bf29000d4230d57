"""/v1/responses as the chat path: request conversion, whole answers and the event sequence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from maas.endpoints.generation.protocol import InputMessage, ResponsesRequest
from maas.endpoints.generation.response_stream import response_events
from maas.endpoints.generation.responses import chat_request, response_from_chat
from maas.protocol.base import UsageInfo
from maas.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    FunctionCall,
    FunctionCallDelta,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
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
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
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


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_function_tools_and_tool_choice_become_the_chat_s() -> None:
    request = ResponsesRequest.model_validate({"model": "m", "input": "Weather?", "tools": [WEATHER],
                                               "tool_choice": {"type": "function", "name": "get_weather"},
                                               "parallel_tool_calls": False})
    chat = chat_request(request)
    assert chat.tools[0].function.name == "get_weather"
    assert chat.tools[0].function.parameters == WEATHER["parameters"]
    assert chat.tool_choice.function.name == "get_weather" and chat.parallel_tool_calls is False
    for choice in ("auto", "none", "required"):
        assert chat_request(request.model_copy(update={"tool_choice": choice})).tool_choice == choice
    nameless = ResponsesRequest.model_validate({"model": "m", "input": "x", "tools": [{"type": "function"}]})
    with pytest.raises(InvalidRequestError) as error:
        chat_request(nameless)
    assert error.value.param == "tools[0].name"


def test_function_call_items_become_assistant_tool_calls_and_tool_messages() -> None:
    request = ResponsesRequest.model_validate({"model": "m", "tools": [WEATHER], "input": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "Rome"}',
         "id": "fc_1", "status": "completed"},
        {"type": "function_call_output", "call_id": "c1", "output": "22 C"},
        {"type": "function_call_output", "call_id": "c2", "output": "25 C"}]})
    messages = chat_request(request).messages
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c.id for c in messages[1].tool_calls] == ["c1", "c2"] and messages[1].content is None
    assert (messages[2].tool_call_id, messages[2].text(), messages[2].name) == ("c1", "22 C", "get_weather")


def test_earlier_items_come_first_and_instructions_stay_on_top() -> None:
    earlier = [InputMessage(role="user", content="one"), InputMessage(role="assistant", content="1")]
    chat = chat_request(ResponsesRequest(model="m", input="two", instructions="Be brief."), earlier)
    assert [(m.role, m.text()) for m in chat.messages] == [
        ("system", "Be brief."), ("user", "one"), ("assistant", "1"), ("user", "two")]


def test_a_chat_answer_with_tool_calls_becomes_function_call_items() -> None:
    calls = [ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))]
    answer = ChatCompletionResponse(model="m", usage=UsageInfo.of(5, 9), choices=[
        ChatChoice(index=0, message=ResponseMessage(content=None, tool_calls=calls), finish_reason="tool_calls")])
    request = ResponsesRequest.model_validate({"model": "m", "input": "Weather?", "tools": [WEATHER],
                                               "tool_choice": "required"})
    response = response_from_chat(request, answer, store=True)
    assert response.status == "completed" and response.store and response.tool_choice == "required"
    assert [item.type for item in response.output] == ["function_call"]
    item = response.output[0]
    assert (item.call_id, item.name, item.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')
    assert item.id.startswith("fc") and response.tools[0]["name"] == "get_weather"
    answer.choices[0].message.content = "Let me check."
    assert [item.type for item in response_from_chat(request, answer).output] == ["message", "function_call"]


def test_a_streamed_tool_call_becomes_function_call_events() -> None:
    fragments = [ToolCallDelta(index=0, id="call_7", type="function", function=FunctionCallDelta(name="get_weather")),
                 ToolCallDelta(index=0, function=FunctionCallDelta(arguments='{"city": ')),
                 ToolCallDelta(index=0, function=FunctionCallDelta(arguments='"Paris"}'))]

    async def chunks() -> AsyncIterator[ChatCompletionChunk]:
        for i, fragment in enumerate(fragments):
            yield ChatCompletionChunk(id="c", created=0, model="m", choices=[ChatChunkChoice(
                index=0, delta=ChatDelta(tool_calls=[fragment]), finish_reason="tool_calls" if i == 2 else None)])
        yield ChatCompletionChunk(id="c", created=0, model="m", choices=[], usage=UsageInfo.of(5, 9))

    async def collect() -> list:
        request = ResponsesRequest.model_validate({"model": "m", "input": "x", "stream": True, "tools": [WEATHER]})
        return [e async for e in response_events(request, chunks(), store=True)]

    events = asyncio.run(collect())
    assert [e.type.removeprefix("response.") for e in events] == [
        "created", "in_progress", "output_item.added", "function_call_arguments.delta",
        "function_call_arguments.delta", "function_call_arguments.done", "output_item.done", "completed"]
    assert events[2].item.call_id == "call_7" and events[2].item.name == "get_weather"
    assert events[5].arguments == '{"city": "Paris"}' and events[5].item_id == events[2].item.id
    final = events[-1].response
    assert final.store and [i.type for i in final.output] == ["function_call"]
    assert final.output[0].arguments == '{"city": "Paris"}' and final.output[0].status == "completed"
