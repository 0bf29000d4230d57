"""Agents and evaluation harnesses against the real engines: function calling with the openai
client, LangChain's ChatOpenAI / OpenAIEmbeddings and LiteLLM, ``echo`` + ``logprobs`` against
vLLM's offline ``prompt_logprobs``, ``models.retrieve``, compact structured output, bad input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import ENCODER, GENERATOR
from tests.integration.offline import ECHO_PROMPTS

pytestmark = pytest.mark.integration

WEATHER_PARAMETERS = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 16}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city.",
                                             "parameters": WEATHER_PARAMETERS}}
TIME_PARAMETERS = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                   "required": ["zone"], "additionalProperties": False}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": TIME_PARAMETERS}}
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def assert_valid_calls(calls: Any) -> None:
    assert calls, "no tool calls"
    for call in calls:
        assert call.id and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("tool_choice", [NAMED, "required"], ids=["named", "required"])
def test_forced_tool_choice_returns_valid_calls(openai_client, tool_choice: Any, temperature: float) -> None:
    response = openai_client.chat.completions.create(
        model=GENERATOR, messages=QUESTION, tools=[WEATHER, TIME], tool_choice=tool_choice,
        temperature=temperature, seed=1, max_tokens=80, parallel_tool_calls=False)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert_valid_calls(choice.message.tool_calls)
    if tool_choice == NAMED:
        assert choice.message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("tool_choice", [NAMED, "required"], ids=["named", "required"])
def test_streamed_tool_call_reassembles(openai_client, tool_choice: Any) -> None:
    stream = openai_client.chat.completions.create(
        model=GENERATOR, messages=QUESTION, tools=[WEATHER, TIME], tool_choice=tool_choice, temperature=0,
        max_tokens=80, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls" and calls
    for call in calls.values():
        assert call["id"] and call["name"] in SCHEMAS
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    whole = openai_client.chat.completions.create(
        model=GENERATOR, messages=QUESTION, tools=[WEATHER, TIME], tool_choice=tool_choice, temperature=0, max_tokens=80)
    assert [json.loads(c["arguments"]) for c in calls.values()] == [
        json.loads(c.function.arguments) for c in whole.choices[0].message.tool_calls]


def test_follow_up_turn_with_the_tool_result_is_answered(openai_client) -> None:
    first = openai_client.chat.completions.create(
        model=GENERATOR, messages=QUESTION, tools=[WEATHER], tool_choice=NAMED, temperature=0, max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    messages = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 12, "unit": "celsius"})}]
    answer = openai_client.chat.completions.create(
        model=GENERATOR, messages=messages, tools=[WEATHER], temperature=0, max_tokens=24)
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls
    if choice.message.tool_calls:
        assert_valid_calls(choice.message.tool_calls)


def test_auto_and_none_answer(openai_client) -> None:
    for tool_choice in ("auto", "none"):
        response = openai_client.chat.completions.create(
            model=GENERATOR, messages=QUESTION, tools=[WEATHER], tool_choice=tool_choice, temperature=0, max_tokens=48)
        message = response.choices[0].message
        if message.tool_calls:  # auto: vLLM's hermes parser read a <tool_call>
            assert tool_choice == "auto" and response.choices[0].finish_reason == "tool_calls"
            assert json.loads(message.tool_calls[0].function.arguments) is not None
        else:
            assert message.content


def test_moderated_chat_takes_tools(client: httpx.Client) -> None:
    response = client.post("/v1/pipelines/moderated_chat", json={
        "messages": QUESTION, "tools": [WEATHER], "tool_choice": NAMED, "temperature": 0, "max_tokens": 60})
    assert response.status_code == 200, response.text
    calls = response.json()["choices"][0]["message"]["tool_calls"]
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER_PARAMETERS)


# ----------------------------------------------------------------------------- other clients


def test_langchain_chat_openai(service: str) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    llm = ChatOpenAI(model=GENERATOR, base_url=f"{service}/v1", api_key="unused", temperature=0,
                     max_tokens=24, max_retries=0, timeout=120)
    assert llm.invoke("What is the capital of France?").content
    assert "".join(chunk.content for chunk in llm.stream("Name a colour.")).strip()

    @tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        return "sunny"

    llm_calls = ChatOpenAI(model=GENERATOR, base_url=f"{service}/v1", api_key="unused", temperature=0,
                           max_tokens=60, max_retries=0, timeout=120)
    message = llm_calls.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather" and isinstance(message.tool_calls[0]["args"]["city"], str)

    class City(BaseModel):
        """A city and its country."""

        name: str = Field(max_length=20)
        country: str = Field(max_length=20)

    for method in ("json_schema", "function_calling"):
        city = llm_calls.with_structured_output(City, method=method).invoke("Paris is a city in which country?")
        assert isinstance(city, City), method


def test_langchain_embeddings(service: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model=ENCODER, base_url=f"{service}/v1", api_key="unused",
                                  check_embedding_ctx_length=False, max_retries=0)
    vectors = embeddings.embed_documents(["a cat", "a dog"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert len(embeddings.embed_query("a bird")) == 384


def test_litellm_completion_and_embedding(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import litellm

    response = litellm.completion(model=f"openai/{GENERATOR}", api_base=f"{service}/v1", api_key="unused",
                                  messages=QUESTION, max_tokens=12, temperature=0)
    assert response.choices[0].message.content
    embedding = litellm.embedding(model=f"openai/{ENCODER}", api_base=f"{service}/v1", api_key="unused",
                                  input=["a cat"])
    assert len(embedding.data[0]["embedding"]) == 384


# ----------------------------------------------------------------------------- echo and prompt logprobs


def test_echo_logprobs_equal_offline_prompt_logprobs(openai_client, client: httpx.Client,
                                                     offline_reference: dict) -> None:
    offline_prompt_logprobs = offline_reference["prompt_logprobs"]
    response = openai_client.completions.create(model=GENERATOR, prompt=ECHO_PROMPTS, echo=True, logprobs=1,
                                                max_tokens=1, temperature=0)
    for choice, prompt, expected in zip(response.choices, ECHO_PROMPTS, offline_prompt_logprobs):
        assert choice.text.startswith(prompt)
        n = len(expected["token_ids"])
        served = choice.logprobs.token_logprobs[:n]
        assert served[0] is None and expected["logprobs"][0] is None
        assert served[1:] == pytest.approx(expected["logprobs"][1:], abs=2e-3)
        assert "".join(choice.logprobs.tokens[:n]) == prompt
        assert len(choice.logprobs.tokens) == n + 1  # the prompt's tokens, then the answer's one
    raw = client.post("/v1/completions", json={"model": GENERATOR, "prompt": ECHO_PROMPTS[0], "max_tokens": 1,
                                               "prompt_logprobs": 0}).json()
    positions = raw["choices"][0]["prompt_logprobs"]
    expected = offline_prompt_logprobs[0]
    assert positions[0] is None
    for position, token_id, logprob in zip(positions[1:], expected["token_ids"][1:], expected["logprobs"][1:]):
        assert position[str(token_id)]["logprob"] == pytest.approx(logprob, abs=2e-3)


# ----------------------------------------------------------------------------- the rest of the surface


def test_models_retrieve(openai_client) -> None:
    model = openai_client.models.retrieve(GENERATOR)
    assert model.id == GENERATOR and model.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_structured_output_is_compact(openai_client, temperature: float) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                               "colours": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                                           "maxItems": 3}},
              "required": ["name", "colours"], "additionalProperties": False}
    response = openai_client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": "Describe a flag as JSON."}], temperature=temperature,
        seed=3, max_tokens=80, response_format={"type": "json_schema", "json_schema": {"name": "flag", "schema": schema}})
    text = response.choices[0].message.content
    value = json.loads(text)
    jsonschema.validate(value, schema)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(("body", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "nonsense"}}}}}]}, "tools.0.function.parameters"),
    ({"messages": QUESTION + [{"role": "tool", "content": "12"}]}, "messages.1.tool_call_id"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     "messages.0.content.0.type"),
])
def test_bad_tool_input_is_a_400_naming_the_parameter(client: httpx.Client, body: dict, param: str) -> None:
    response = client.post("/v1/chat/completions", json={"model": GENERATOR, "messages": QUESTION, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
