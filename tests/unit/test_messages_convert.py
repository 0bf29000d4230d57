"""maas/endpoints/messages/convert.py and events.py: a Messages request as a chat request, the chat's
answer as a message, and a chat stream as Anthropic's event sequence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from maas.endpoints.messages.convert import chat_request, message_from_chat
from maas.endpoints.messages.events import message_events
from maas.endpoints.messages.protocol import CountTokensRequest, MessagesRequest
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

WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def request(**fields: Any) -> MessagesRequest:
    base = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    return MessagesRequest.model_validate({**base, **fields})


def test_system_turns_and_sampling_become_the_chat_request() -> None:
    chat = chat_request(request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": {}}],
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                  {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]}],
        stop_sequences=["\n\n"], temperature=0, top_p=0.5, top_k=5, metadata={"user_id": "u1"}, stream=True))
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief.\nBe kind."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Capital of France?")]
    assert (chat.max_tokens, chat.stop, chat.temperature, chat.top_p, chat.top_k, chat.user) == (
        16, ["\n\n"], 0, 0.5, 5, "u1")
    assert chat.stream and chat.stream_options.include_usage
    assert chat.tools is None and chat.tool_choice is None


def test_output_config_format_is_structured_output() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = chat_request(request(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"}))
    assert chat.response_format.type == "json_schema" and chat.response_format.json_schema.json_schema == schema
    assert chat_request(request(output_config={"effort": "low"})).response_format is None


def test_tool_use_and_tool_result_blocks_become_tool_calls_and_tool_messages() -> None:
    chat = chat_request(request(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "18 C"}]},
                                     {"type": "text", "text": "And tomorrow?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "down",
                                      "is_error": True}]}]))
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "user", "assistant", "tool"]
    call = chat.messages[1].tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_1", "get_weather", {"city": "Paris"})
    assert chat.messages[1].content == "Let me check."
    assert (chat.messages[2].tool_call_id, chat.messages[2].content) == ("toolu_1", "18 C")
    assert chat.messages[3].content == "And tomorrow?"
    assert chat.messages[4].content is None and chat.messages[4].tool_calls[0].id == "toolu_2"
    assert chat.messages[5].content == "Error: down"
    tool = chat.tools[0].function
    assert (tool.name, tool.description, tool.parameters) == ("get_weather", WEATHER["description"], WEATHER["input_schema"])


@pytest.mark.parametrize("choice, expected, parallel", [
    ({"type": "auto"}, "auto", None), ({"type": "any"}, "required", None), ({"type": "none"}, "none", None),
    ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ({"type": "tool", "name": "get_weather"}, "get_weather", None)])
def test_tool_choice_maps_to_chat(choice: dict[str, Any], expected: str, parallel: bool | None) -> None:
    chat = chat_request(request(tools=[WEATHER], tool_choice=choice))
    named = chat.tool_choice if isinstance(chat.tool_choice, str) else chat.tool_choice.function.name
    assert named == expected and chat.parallel_tool_calls is parallel


def test_count_tokens_takes_the_prompt_without_sampling() -> None:
    body = {"model": "m", "system": "S", "messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER]}
    chat = chat_request(CountTokensRequest.model_validate(body))
    assert [m.role for m in chat.messages] == ["system", "user"] and chat.max_tokens is None and chat.tools


@pytest.mark.parametrize("fields, param", [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
     "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"type": "image", "source": {}}]}]}]},
     "messages.0.content.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
                   {"role": "user", "content": "?"}]}, "messages.1.content.0"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]},
     "messages.1"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
])
def test_what_the_service_cannot_take_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        chat_request(request(**fields))
    assert refused.value.param == param


@pytest.mark.parametrize("fields", [
    {"max_tokens": None}, {"max_tokens": 0}, {"temperature": 1.5}, {"stop_sequences": ["a"] * 5}, {"messages": []},
    {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
    {"tools": [{"name": "f"}]}, {"tool_choice": {"type": "tool"}}, {"tool_choice": {"type": "sometimes"}}])
def test_malformed_requests_fail_validation(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        request(**fields)


def answer(text: str | None, finish: str, stop: str | None = None, calls: list[ToolCall] | None = None) -> ChatCompletionResponse:
    choice = ChatChoice(index=0, message=ResponseMessage(content=text, tool_calls=calls), finish_reason=finish,
                        stop_reason=stop)
    return ChatCompletionResponse(model="m", choices=[choice], usage=UsageInfo.of(7, 3))


def test_a_chat_answer_becomes_a_message_with_its_stop_reason_and_usage() -> None:
    message = message_from_chat(answer("Paris.", "stop"))
    body = json.loads(message.model_dump_json())
    assert body["type"] == "message" and body["role"] == "assistant" and body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "Paris."}]
    assert (body["stop_reason"], body["stop_sequence"], body["usage"]) == (
        "end_turn", None, {"input_tokens": 7, "output_tokens": 3})
    assert message_from_chat(answer("Par", "length")).stop_reason == "max_tokens"
    cut = message_from_chat(answer("Paris", "stop", stop="."))
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", ".")
    call = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
    used = json.loads(message_from_chat(answer(None, "tool_calls", calls=[call])).model_dump_json())
    assert used["stop_reason"] == "tool_use"
    assert used["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]
    partial = ToolCall(id="call_2", function=FunctionCall(name="get_weather", arguments='{"city": "Pa'))
    cut_call = message_from_chat(answer(None, "length", calls=[partial]))
    assert cut_call.stop_reason == "max_tokens" and cut_call.content[0].input == {}


def chunk(content: str | None = None, calls: list[ToolCallDelta] | None = None, finish: str | None = None,
          stop: str | None = None, usage: UsageInfo | None = None) -> ChatCompletionChunk:
    choices = [] if usage else [ChatChunkChoice(index=0, delta=ChatDelta(content=content, tool_calls=calls),
                                                finish_reason=finish, stop_reason=stop)]
    return ChatCompletionChunk(id="c", created=0, model="m", choices=choices, usage=usage)


def events_of(chunks: list[ChatCompletionChunk]) -> list[dict[str, Any]]:
    async def stream() -> AsyncIterator[ChatCompletionChunk]:
        for item in chunks:
            yield item

    async def collect() -> list[dict[str, Any]]:
        return [json.loads(e.model_dump_json()) async for e in message_events("m", 7, stream())]

    return asyncio.run(collect())


def test_a_text_stream_is_anthropics_event_sequence() -> None:
    events = events_of([chunk("Par"), chunk("is"), chunk("", finish="stop", stop="."), chunk(usage=UsageInfo.of(7, 3))])
    assert [e["type"] for e in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    start = events[0]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]) == ([], None, {"input_tokens": 7, "output_tokens": 0})
    assert events[2] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(e["delta"]["text"] for e in events[3:5]) == "Paris"
    assert events[6]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "."}
    assert events[6]["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_streamed_tool_calls_are_tool_use_blocks_with_input_json_deltas() -> None:
    first = ToolCallDelta(index=0, id="call_1", type="function", function=FunctionCallDelta(name="f", arguments='{"a"'))
    rest = ToolCallDelta(index=0, function=FunctionCallDelta(arguments=": 1}"))
    second = ToolCallDelta(index=1, id="call_2", type="function", function=FunctionCallDelta(name="g", arguments="{}"))
    events = events_of([chunk("Sure."), chunk(calls=[first]), chunk(calls=[rest, second], finish="tool_calls"),
                        chunk(usage=UsageInfo.of(7, 9))])
    kinds = [(e["type"], e.get("index")) for e in events]
    assert kinds == [("message_start", None), ("ping", None), ("content_block_start", 0), ("content_block_delta", 0),
                     ("content_block_stop", 0), ("content_block_start", 1), ("content_block_delta", 1),
                     ("content_block_delta", 1), ("content_block_stop", 1), ("content_block_start", 2),
                     ("content_block_delta", 2), ("content_block_stop", 2), ("message_delta", None),
                     ("message_stop", None)]
    assert events[5]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert events[6]["delta"]["partial_json"] + events[7]["delta"]["partial_json"] == '{"a": 1}'
    assert events[12]["delta"]["stop_reason"] == "tool_use"
