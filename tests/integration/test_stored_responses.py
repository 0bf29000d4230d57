"""Stored responses and function tools of /v1/responses on the session's real engines, with the
official ``openai`` client: a conversation continued by ``previous_response_id`` (its prompt is the
whole conversation, token for token), retrieve, input items (the conversation's, then the
request's), delete then 404, a function call (whole and streamed) and its ``function_call_output``
answered (the prompt that of the same chat), an unknown ``previous_response_id`` a 404; a
background response polled to its end, an over-long one a 400 at creation, and one cancelled while
it runs; and over the session's keyed ingress, another key's 404 for each operation.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
import ray

from tests.conftest import GENERATOR, KeyedService

pytestmark = pytest.mark.integration

ASK = {"model": GENERATOR, "temperature": 0, "max_output_tokens": 16}
CITIES = ["Paris", "Rome"]
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": CITIES}},
                          "required": ["city"]}}


def prompt_tokens(client: Any, messages: list[dict[str, str]]) -> int:
    """The prompt tokens of a chat of ``messages`` (one token generated)."""
    chat = client.chat.completions.create(model=GENERATOR, messages=messages, max_tokens=1, temperature=0)
    return chat.usage.prompt_tokens


def test_a_three_turn_conversation_by_previous_response_id(openai_client: Any) -> None:
    turns = ["My name is Ada.", "What is my name?", "Thank you."]
    first = openai_client.responses.create(input=turns[0], **ASK)
    second = openai_client.responses.create(input=turns[1], previous_response_id=first.id, **ASK)
    third = openai_client.responses.create(input=turns[2], previous_response_id=second.id, **ASK)
    assert first.store and third.previous_response_id == second.id
    conversation = [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": first.output_text},
                    {"role": "user", "content": turns[1]}, {"role": "assistant", "content": second.output_text},
                    {"role": "user", "content": turns[2]}]
    assert third.usage.input_tokens == prompt_tokens(openai_client, conversation)

    again = openai_client.responses.retrieve(second.id)
    assert (again.id, again.output_text, again.usage.total_tokens) == (
        second.id, second.output_text, second.usage.total_tokens)
    items = openai_client.responses.input_items.list(third.id).data  # all it was made of, newest first
    assert [(item.type, item.role, item.content[0].text) for item in items] == [
        ("message", message["role"], message["content"]) for message in reversed(conversation)]

    openai_client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.delete(first.id)
    assert openai_client.responses.retrieve(third.id).id == third.id  # its own copy of the conversation


def test_a_function_call_and_its_output_round_trip(openai_client: Any) -> None:
    asked = openai_client.responses.create(input="What is the weather in Paris?", tools=[WEATHER],
                                           tool_choice={"type": "function", "name": "get_weather"}, **ASK)
    calls = [item for item in asked.output if item.type == "function_call"]
    assert asked.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"] in CITIES and calls[0].call_id
    events = list(openai_client.responses.create(
        input="What is the weather in Paris?", tools=[WEATHER], stream=True,
        tool_choice={"type": "function", "name": "get_weather"}, **ASK))
    streamed = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert events[-1].type == "response.completed" and streamed == calls[0].arguments
    assert [item.type for item in events[-1].response.output] == ["function_call"]
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 C and sunny"}
    answer = openai_client.responses.create(input=[result], previous_response_id=asked.id, tools=[WEATHER],
                                            tool_choice="none", **ASK)
    assert answer.output[0].type == "message" and answer.output_text
    call = {"id": calls[0].call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": calls[0].arguments}}
    chat = openai_client.chat.completions.create(
        model=GENERATOR, max_tokens=1, tool_choice="none", messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": calls[0].call_id, "name": "get_weather", "content": result["output"]}],
        tools=[{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}])
    assert answer.usage.input_tokens == chat.usage.prompt_tokens  # the call and its result came before
    items = openai_client.responses.input_items.list(answer.id).data
    assert [item.type for item in items] == ["function_call_output", "function_call", "message"]
    assert (items[0].call_id, items[0].output) == (calls[0].call_id, "22 C and sunny")
    assert (items[1].id, items[1].call_id) == (calls[0].id, calls[0].call_id)  # asked's output item


def test_an_unknown_previous_response_id_is_a_404(openai_client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        openai_client.responses.create(input="Hi", previous_response_id="resp-unknown", **ASK)
    assert error.value.body["param"] == "previous_response_id"


def poll_until_ended(client: Any, response_id: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_background_response_runs_to_completion(openai_client: Any) -> None:
    asked = {"input": "What is the capital of France?", **ASK}
    queued = openai_client.responses.create(background=True, **asked)
    assert queued.status == "queued" and queued.background and queued.output == []
    done = poll_until_ended(openai_client, queued.id)
    assert done.status in ("completed", "incomplete") and done.id == queued.id
    assert done.output_text == openai_client.responses.create(store=False, **asked).output_text
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.responses.create(background=True, store=False, **asked)
    assert error.value.body["param"] == "background"
    with pytest.raises(openai.BadRequestError) as error:  # prepared at creation: not a failed response later
        openai_client.responses.create(**{**asked, "input": "word " * 3000}, background=True)
    assert error.value.body["code"] == "context_length_exceeded"


def test_a_cancelled_background_response_stays_cancelled(openai_client: Any) -> None:
    queued = openai_client.responses.create(input="Write a long story about the sea.", background=True,
                                            **{**ASK, "max_output_tokens": 200})  # seconds: the cancel lands first
    cancelled = openai_client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until its runner is gone
        try:
            ray.get_actor(f"maas-response-{queued.id}", namespace="serve")
        except ValueError:
            break
        time.sleep(0.2)
    assert openai_client.responses.retrieve(queued.id).status == "cancelled"  # its runner recorded nothing


def test_another_key_gets_a_404_for_each_operation(keyed_service: KeyedService) -> None:
    ann, ben = (openai.OpenAI(base_url=f"{keyed_service.url}/v1", api_key=keyed_service.secrets[key],
                              max_retries=0, timeout=120) for key in ("ann", "ben"))
    stored = ann.responses.create(input="Hi", **{**ASK, "max_output_tokens": 4})
    for call in (lambda: ben.responses.retrieve(stored.id), lambda: ben.responses.delete(stored.id),
                 lambda: ben.responses.input_items.list(stored.id),
                 lambda: ben.responses.create(input="Hi", previous_response_id=stored.id, **ASK)):
        with pytest.raises(openai.NotFoundError) as error:
            call()
        assert error.value.body["code"] == "response_not_found" and stored.id in error.value.body["message"]
    assert error.value.body["param"] == "previous_response_id"
    again = ann.responses.retrieve(stored.id)  # still there for its key
    assert (again.id, again.output_text) == (stored.id, stored.output_text)
    assert [item.content[0].text for item in ann.responses.input_items.list(stored.id).data] == ["Hi"]
