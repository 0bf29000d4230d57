"""Generation through HTTP with the official openai client, against vLLM's offline LLM."""

import json

import pytest

from tests.conftest import CLASSIFIER, GENERATOR, TOPIC
from tests.integration.offline import COMPLETION_PROMPTS as PROMPTS
from tests.integration.offline import MAX_TOKENS, QUESTIONS, completion

pytestmark = pytest.mark.integration

def test_models_list(openai_client) -> None:
    models = {m.id for m in openai_client.models.list().data}
    assert {GENERATOR, CLASSIFIER, TOPIC, "all-minilm-l6-v2"} <= models


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_greedy_completion_matches_offline_vllm(openai_client, offline_reference: dict, index: int) -> None:
    response = openai_client.completions.create(
        model=GENERATOR, prompt=PROMPTS[index], max_tokens=MAX_TOKENS, temperature=0, logprobs=0
    )
    expected = completion(offline_reference, PROMPTS[index])
    choice = response.choices[0]
    assert choice.text == expected["text"]
    assert len(choice.logprobs.tokens) == len(expected["token_ids"]) == response.usage.completion_tokens
    assert response.usage.prompt_tokens == expected["prompt_tokens"]


@pytest.mark.parametrize("index", range(len(QUESTIONS)))
def test_greedy_chat_matches_offline_vllm(openai_client, offline_reference: dict, index: int) -> None:
    response = openai_client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": QUESTIONS[index]}],
        max_tokens=MAX_TOKENS, temperature=0, logprobs=True,
    )
    expected = offline_reference["chat"][index]
    assert response.choices[0].message.content == expected["text"]
    assert len(response.choices[0].logprobs.content) == len(expected["token_ids"])
    assert response.usage.prompt_tokens == expected["prompt_tokens"]
    assert response.usage.completion_tokens == len(expected["token_ids"])


def test_capital_of_france(openai_client) -> None:
    response = openai_client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0,
    )
    assert "Paris" in response.choices[0].message.content


def test_streamed_chat_concatenates_to_the_whole_answer(openai_client) -> None:
    kwargs = {"model": GENERATOR, "messages": [{"role": "user", "content": QUESTIONS[1]}],
              "max_tokens": MAX_TOKENS, "temperature": 0}
    whole = openai_client.chat.completions.create(**kwargs)
    stream = openai_client.chat.completions.create(**kwargs, stream=True,
                                                   stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_streamed_completion_concatenates(openai_client) -> None:
    kwargs = {"model": GENERATOR, "prompt": PROMPTS[0], "max_tokens": MAX_TOKENS, "temperature": 0}
    whole = openai_client.completions.create(**kwargs)
    text = "".join(c.choices[0].text for c in openai_client.completions.create(**kwargs, stream=True)
                   if c.choices)
    assert text == whole.choices[0].text


def test_sampling_parameters(openai_client) -> None:
    kwargs = {"model": GENERATOR, "messages": [{"role": "user", "content": "Tell me a story."}],
              "max_tokens": 12, "temperature": 0.9, "top_p": 0.9, "seed": 7, "n": 2,
              "presence_penalty": 0.5, "frequency_penalty": 0.5, "logprobs": True, "top_logprobs": 3,
              "extra_body": {"top_k": 20}}
    first = openai_client.chat.completions.create(**kwargs)
    second = openai_client.chat.completions.create(**kwargs)
    assert len(first.choices) == 2
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    assert all(len(t.top_logprobs) == 3 for c in first.choices for t in c.logprobs.content)
    assert first.usage.completion_tokens == sum(len(c.logprobs.content) for c in first.choices)


def test_stop_and_length_finish_reasons(openai_client) -> None:
    stopped = openai_client.completions.create(
        model=GENERATOR, prompt="1, 2, 3, 4,", max_tokens=30, temperature=0, stop=[" 7"])
    assert stopped.choices[0].finish_reason == "stop" and " 7" not in stopped.choices[0].text
    cut = openai_client.completions.create(model=GENERATOR, prompt="Once upon a time", max_tokens=3,
                                           temperature=0)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3


def test_vllm_extensions_ignore_eos_and_min_tokens(openai_client) -> None:
    """vLLM's own request extensions pass through (benchmark clients rely on ``ignore_eos``)."""
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    short = openai_client.chat.completions.create(model=GENERATOR, messages=chat, max_tokens=60,
                                                  temperature=0)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 60
    forced = openai_client.chat.completions.create(model=GENERATOR, messages=chat, max_tokens=60,
                                                   temperature=0, extra_body={"ignore_eos": True})
    assert forced.choices[0].finish_reason == "length" and forced.usage.completion_tokens == 60
    longer = openai_client.completions.create(
        model=GENERATOR, prompt="The capital of France is", max_tokens=40, temperature=0,
        extra_body={"min_tokens": 25, "repetition_penalty": 1.2})
    assert longer.usage.completion_tokens >= 25


def test_batch_of_prompts(openai_client) -> None:
    response = openai_client.completions.create(model=GENERATOR, prompt=PROMPTS[:2], max_tokens=4,
                                                temperature=0.7, seed=1, n=2)
    assert sorted(c.index for c in response.choices) == [0, 1, 2, 3]


def test_greedy_with_several_choices_is_a_400(openai_client) -> None:
    import openai

    with pytest.raises(openai.BadRequestError):
        openai_client.completions.create(model=GENERATOR, prompt="x", max_tokens=2, temperature=0, n=2)


PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "maxLength": 40},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", range(4))
def test_json_schema_answers_always_parse_and_validate(openai_client, seed: int) -> None:
    """Structured decoding: sampled answers (temperature 1) are JSON valid against the schema."""
    import jsonschema

    answer = openai_client.chat.completions.create(
        model=GENERATOR, max_tokens=200, temperature=1.0, seed=seed,
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), PERSON_SCHEMA)


def test_json_object_mode_answers_an_object(openai_client) -> None:
    """Any JSON object: a small model may repeat keys until max_tokens, so the answer is a
    valid JSON prefix that opens an object, and a whole object when it stops by itself."""
    answer = openai_client.chat.completions.create(
        model=GENERATOR, max_tokens=60, temperature=0,
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        response_format={"type": "json_object"},
    )
    choice = answer.choices[0]
    assert choice.message.content.lstrip().startswith("{")
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
