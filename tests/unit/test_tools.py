"""Function-calling rules (maas/generation_rules/tools.py): request checks, forced-call schemas, the
Hermes rendering for templates without tools, and turning output into tool calls (vLLM's parser)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import xgrammar

from maas.endpoints.generation.assemble import chat_response, merge_results
from maas.endpoints.service.models import model_card
from maas.endpoints.service.protocol import ModelCard
from maas.generation_rules.tools import (
    AutoCalls,
    NamedCalls,
    RequiredCalls,
    check_chat_request,
    hermes_messages,
    tool_mode,
    tool_schema,
    with_tools,
)
from maas.protocol.chat import ChatCompletionRequest, GenerationChunk, GenerationParams, GenerationResult
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"$ref": "#/$defs/zone"}}, "required": ["zone"],
    "$defs": {"zone": {"type": "string"}}}}}


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], **fields})


def refused(request: ChatCompletionRequest) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        check_chat_request(request)
    return info.value


@pytest.mark.parametrize(("fields", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "nonsense"}}}}}]}, "tools.0.function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools.0.function.parameters"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "12 C"}]}, "messages.1.tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "function": {"name": "get_weather", "arguments": "not json"}}]}]},
     "messages.0.tool_calls.0.function.arguments"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                                {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages.0.content.1.type"),
])
def test_bad_tool_requests_name_the_parameter(fields: dict, param: str) -> None:
    error = refused(chat(**fields))
    assert error.param == param and error.status_code == 400


def test_image_part_message_says_text_only() -> None:
    error = refused(chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]))
    assert "text only" in error.message


def test_good_requests_pass_and_modes() -> None:
    follow_up = chat(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12 C"}])
    check_chat_request(follow_up)
    check_chat_request(chat(tool_choice="none"))
    assert tool_mode(chat()) is None
    assert tool_mode(chat(tools=[WEATHER])) == "auto"
    assert tool_mode(chat(tools=[WEATHER], tool_choice="none")) is None
    assert tool_mode(chat(tools=[WEATHER], tool_choice="required")) == "required"
    named = chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert tool_mode(named) == "named"


def test_forced_schemas_compile_and_validate_calls() -> None:
    tools = [WEATHER, TIME]
    named = tool_schema(tools, "get_weather")
    assert named == WEATHER["function"]["parameters"]
    required = tool_schema([json.loads(json.dumps(t)) for t in tools], None, parallel=False)
    for schema in (named, required):
        xgrammar.Grammar.from_json_schema(json.dumps(schema))
        jsonschema.validators.validator_for(schema).check_schema(schema)
    assert required["maxItems"] == 1 and "zone" in required["$defs"]
    jsonschema.validate([{"name": "get_time", "parameters": {"zone": "UTC"}}], required)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"name": "get_time", "parameters": {"city": "x"}}], required)


def test_with_tools_sets_engine_parameters() -> None:
    params = GenerationParams(max_tokens=8)
    assert with_tools(params, chat(), "hermes") == params
    auto = with_tools(params, chat(tools=[WEATHER]), "hermes")
    assert (auto.tool_mode, auto.tool_parser, auto.json_schema) == ("auto", "hermes", None)
    assert with_tools(params, chat(tools=[WEATHER]), None) == params  # no parser: text only
    forced = with_tools(params, chat(tools=[WEATHER], tool_choice="required"), "hermes")
    assert forced.tool_mode == "required" and json.loads(forced.json_schema)["type"] == "array"


def test_named_calls_stream_arguments_and_merge_to_one_call() -> None:
    parser = NamedCalls("get_weather")
    pieces = ['{"city":', '"Paris"', "}"]
    chunks = [parser.apply(GenerationChunk(index=0, text=p, finish_reason="stop" if i == 2 else None))
              for i, p in enumerate(pieces)]
    assert chunks[0].tool_calls[0].id and chunks[0].tool_calls[0].function.name == "get_weather"
    assert all(c.text == "" for c in chunks) and chunks[-1].finish_reason == "tool_calls"
    merged = merge_results([GenerationResult(chunks=[c], prompt_tokens=3, completion_tokens=i + 1)
                            for i, c in enumerate(chunks)])
    message = chat_response("m", merged).choices[0].message
    assert message.content is None and json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert chat_response("m", merged).choices[0].finish_reason == "tool_calls"


def test_required_calls_parse_the_array_or_give_text_back() -> None:
    parser = RequiredCalls()
    assert parser.apply(GenerationChunk(index=0, text='[{"name":"get_weather",')).tool_calls is None
    done = parser.apply(GenerationChunk(index=0, text='"parameters":{"city":"Oslo"}}]', finish_reason="stop"))
    assert done.tool_calls[0].function.name == "get_weather" and done.finish_reason == "tool_calls"
    assert json.loads(done.tool_calls[0].function.arguments) == {"city": "Oslo"}
    cut = RequiredCalls().apply(GenerationChunk(index=0, text='[{"name":"get_w', finish_reason="length"))
    assert cut.tool_calls is None and cut.text == '[{"name":"get_w' and cut.finish_reason == "length"


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir: Path):  # noqa: ANN201 - a transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


def test_auto_calls_use_vllms_hermes_parser_token_by_token(smollm2_tokenizer) -> None:
    parser = AutoCalls("hermes", smollm2_tokenizer, [WEATHER])
    text = 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    ids = smollm2_tokenizer.encode(text)
    chunks = [parser.apply(GenerationChunk(index=0, text=smollm2_tokenizer.decode([t]), token_ids=[t],
                                           finish_reason="stop" if i == len(ids) - 1 else None))
              for i, t in enumerate(ids)]
    merged = merge_results([GenerationResult(chunks=[c], prompt_tokens=1, completion_tokens=1) for c in chunks])
    choice = chat_response("m", merged).choices[0]
    assert choice.message.content.strip() == "Let me check."
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert choice.finish_reason == "tool_calls"


def test_auto_calls_leave_plain_text_alone(smollm2_tokenizer) -> None:
    parser = AutoCalls("hermes", smollm2_tokenizer, [WEATHER])
    chunk = parser.apply(GenerationChunk(index=0, text="It is sunny.", finish_reason="stop"))
    assert (chunk.text, chunk.tool_calls, chunk.finish_reason) == ("It is sunny.", None, "stop")


def test_hermes_rendering_for_templates_without_tools(smollm2_dir: Path) -> None:
    from maas.engines.tokenizer import TokenizerEngine, TokenizerSpec

    request = chat(tools=[WEATHER], messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12 C"}])
    messages = [m.for_template() for m in request.messages]
    rendered = hermes_messages(messages, [WEATHER])
    assert rendered[0]["role"] == "system" and rendered[0]["content"].startswith("Be brief.")
    assert "<tools>" in rendered[0]["content"] and '"get_weather"' in rendered[0]["content"]
    assert rendered[2]["content"].startswith("<tool_call>") and '"arguments": {"city": "Paris"}' in rendered[2]["content"]
    assert rendered[3] == {"role": "user", "content": "<tool_response>\n12 C\n</tool_response>"}
    engine = TokenizerEngine([TokenizerSpec("m", str(smollm2_dir), 512)])
    text = engine.tokenizer("m").decode(engine.encode_chat("m", messages, tools=[WEATHER]))
    assert "<tool_response>" in text and "<tools>" in text and text.endswith("<|im_start|>assistant\n")


def test_model_card_respects_the_allowed_models() -> None:
    cards = [ModelCard(id="a", capability="generate"), ModelCard(id="b/v1", capability="classify")]
    assert model_card(cards, "b/v1", ["a", "b/v1"]).id == "b/v1"
    for model_id, allowed in (("c", ["a", "b/v1"]), ("b/v1", ["a"])):
        with pytest.raises(ModelNotFoundError) as info:
            model_card(cards, model_id, allowed)
        assert info.value.status_code == 404 and info.value.param == "model"


def test_the_configured_parser_must_be_one_of_vllms() -> None:
    from maas.generation_rules.tools import check_tool_parser

    check_tool_parser("hermes")
    check_tool_parser(None)
    with pytest.raises(KeyError):
        check_tool_parser("no-such-parser")


def test_auto_calls_flush_text_the_parser_held_back(smollm2_tokenizer) -> None:
    parser = AutoCalls("hermes", smollm2_tokenizer, [WEATHER])
    first = parser.apply(GenerationChunk(index=0, text="a < b and <tool"))
    last = parser.apply(GenerationChunk(index=0, text="", finish_reason="length"))
    assert first.text + last.text == "a < b and <tool" and last.tool_calls is None


TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS {{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
    "{% for m in messages %}[{{ m.role }}]{{ m.content }}"
    "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} {{ c.function.arguments.city }}{% endfor %}"
    "{% if m.tool_call_id %} ({{ m.tool_call_id }}){% endif %}{% endfor %}"
)


def test_a_template_with_tools_gets_them_and_the_tool_messages(smollm2_dir: Path) -> None:
    from maas.engines.tokenizer import TokenizerEngine, TokenizerSpec

    engine = TokenizerEngine([TokenizerSpec("m", str(smollm2_dir), 512)])
    engine.tokenizer("m").chat_template = TOOLS_TEMPLATE
    request = chat(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12 C"}])
    ids = engine.encode_chat("m", [m.for_template() for m in request.messages], add_generation_prompt=False,
                             tools=[t.model_dump(exclude_none=True) for t in request.tools])
    assert engine.tokenizer("m").decode(ids) == (
        "TOOLS get_weather\n[user]Weather in Paris?[assistant]CALL get_weather Paris[tool]12 C (c1)")
