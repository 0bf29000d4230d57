"""Anthropic's Messages API with the official ``anthropic`` client against the session's service:
plain and multi-turn messages (the same greedy text as the chat route), a stop sequence, a stream
(``messages.stream``), a forced tool call and a ``tool_result`` round trip, ``count_tokens``, the
handle methods for Python callers, and the error shapes (unknown model, oversize input, missing and
wrong key).

The key test uses the session's keyed ingress (``keyed_service`` in ``tests/conftest.py``, over the
session app's generator and tokenizer): a request or two, no ingress or engine of its own.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import GENERATOR, KeyedService

pytestmark = pytest.mark.integration

SYSTEM = "You are a helpful assistant. Answer briefly."
TURNS = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
         {"role": "user", "content": "What is the capital of France?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "London"]}},
        "required": ["city"], "additionalProperties": False}
WEATHER = {"name": "get_weather", "description": "Current weather of a city.", "input_schema": CITY}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
"""The anthropic SDK (2.17) has no ``temperature`` argument any more; the service still reads it."""


@pytest.fixture(scope="module")
def claude(service: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=service, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def greedy(claude: anthropic.Anthropic) -> Any:
    """The greedy multi-turn answer, with a system prompt (one generation for several tests)."""
    return claude.messages.create(model=GENERATOR, max_tokens=16, **GREEDY, system=SYSTEM, messages=TURNS,
                                  metadata={"user_id": "u-1"})


def test_a_multi_turn_message_is_the_chat_routes_answer_and_counts_its_tokens(
        greedy: Any, claude: anthropic.Anthropic, openai_client: Any) -> None:
    assert greedy.type == "message" and greedy.role == "assistant" and greedy.id.startswith("msg_")
    assert greedy.model == GENERATOR and greedy.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in greedy.content] == ["text"] and greedy.content[0].text.strip()
    chat = openai_client.chat.completions.create(
        model=GENERATOR, max_tokens=16, temperature=0, messages=[{"role": "system", "content": SYSTEM}, *TURNS])
    assert greedy.content[0].text == chat.choices[0].message.content  # the chat path: only the shape differs
    assert (greedy.usage.input_tokens, greedy.usage.output_tokens) == (
        chat.usage.prompt_tokens, chat.usage.completion_tokens)
    counted = claude.messages.count_tokens(model=GENERATOR, system=SYSTEM, messages=TURNS)
    assert counted.input_tokens == greedy.usage.input_tokens


def test_a_stop_sequence_ends_the_answer_and_is_named(greedy: Any, claude: anthropic.Anthropic) -> None:
    text = greedy.content[0].text
    word = next(w for w in (w.strip(".,!?") for w in text.split()) if w and text.index(w) > 0)  # not at the start
    stopped = claude.messages.create(model=GENERATOR, max_tokens=16, **GREEDY, system=SYSTEM,
                                     messages=TURNS, stop_sequences=[word])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", word)
    assert stopped.content[0].text == text[:text.index(word)]


def test_a_stream_sends_anthropics_events_and_the_same_message(greedy: Any, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=GENERATOR, max_tokens=16, **GREEDY, system=SYSTEM,
                                messages=TURNS) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert final.content[0].text == greedy.content[0].text
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
        greedy.stop_reason, greedy.usage.input_tokens, greedy.usage.output_tokens)


def test_the_handle_methods_answer_a_python_caller(greedy: Any) -> None:
    from ray import serve

    from maas.endpoints.messages.protocol import CountTokensRequest, MessagesRequest

    app = serve.get_app_handle("maas")
    body = MessagesRequest(model=GENERATOR, max_tokens=16, temperature=0, system=SYSTEM, messages=TURNS)
    events = list(app.options(stream=True).messages_stream.remote(body))
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == greedy.content[0].text
    counted = app.count_message_tokens.remote(CountTokensRequest(model=GENERATOR, system=SYSTEM, messages=TURNS))
    assert counted.result().input_tokens == greedy.usage.input_tokens


def test_a_forced_tool_call_and_its_result_round_trip(claude: anthropic.Anthropic) -> None:
    called = claude.messages.create(model=GENERATOR, max_tokens=16, **GREEDY, messages=QUESTION,
                                    tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    assert called.stop_reason == "tool_use", called
    call = called.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id
    jsonschema.validate(call.input, CITY)
    answer = claude.messages.create(model=GENERATOR, max_tokens=16, **GREEDY, tools=[WEATHER], messages=[
        *QUESTION, {"role": "assistant", "content": called.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}]}])
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content  # auto: text or a call
    assert all(block.text.strip() if block.type == "text" else block.name == "get_weather" for block in answer.content)
    with claude.messages.stream(model=GENERATOR, max_tokens=16, **GREEDY, messages=QUESTION,
                                tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert "input_json" in kinds  # the SDK's event of an input_json_delta
    assert streamed.stop_reason == "tool_use" and streamed.content[-1].input == call.input


def test_unknown_model_and_oversize_input_are_anthropic_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=QUESTION)
    assert unknown.value.body["type"] == "error" and unknown.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in unknown.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as oversize:
        claude.messages.create(model=GENERATOR, max_tokens=8, messages=[{"role": "user", "content": "word " * 3000}])
    assert oversize.value.body["error"]["type"] == "invalid_request_error"
    assert "context length" in oversize.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):  # counting checks the context too
        claude.messages.count_tokens(model=GENERATOR, messages=[{"role": "user", "content": "word " * 3000}])


# ----------------------------------------------------------------------------- API keys


def test_keys_are_read_from_x_api_key_and_a_missing_or_wrong_key_is_a_401(keyed_service: KeyedService) -> None:
    url, secret = keyed_service.url, keyed_service.secrets["ann"]
    only = {"Authorization": anthropic.Omit()}  # the client sends no key unless told
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120,
                                 default_headers={**only, "x-api-key": secret})
    counted = client.messages.count_tokens(model=GENERATOR, messages=QUESTION)
    assert counted.input_tokens > 0
    for headers in (only, {**only, "x-api-key": "maas-wrong"}):
        refused = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, default_headers=headers)
        with pytest.raises(anthropic.AuthenticationError) as missing:
            refused.messages.create(model=GENERATOR, max_tokens=8, messages=QUESTION)
        assert missing.value.body["error"]["type"] == "authentication_error"
    raw = httpx.post(f"{url}/v1/messages", json={"model": GENERATOR, "max_tokens": 8, "messages": QUESTION})
    assert raw.status_code == 401 and raw.json()["type"] == "error" and set(raw.json()["error"]) == {"type", "message"}
