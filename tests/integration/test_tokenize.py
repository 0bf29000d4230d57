"""Tokenize / detokenize in vLLM's shapes; counts agree with the generator's usage."""

import httpx
import pytest

from tests.conftest import CLASSIFIER, GENERATOR, TEST_MAX_MODEL_LEN

pytestmark = pytest.mark.integration

UNICODE = ["日本語のテキスト、中文文本", "emoji 🎉🚀👩‍👩‍👧‍👦 mixed", "accents: café, naïve, São Paulo, Øresund",
           "Ελληνικά и русский", "tab\tnew\nline"]


@pytest.mark.parametrize("text", UNICODE)
def test_round_trip_unicode(client: httpx.Client, text: str) -> None:
    tokens = client.post("/v1/tokenize", json={"model": GENERATOR, "prompt": text,
                                               "add_special_tokens": False}).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0
    assert tokens["max_model_len"] == TEST_MAX_MODEL_LEN
    back = client.post("/v1/detokenize", json={"model": GENERATOR, "tokens": tokens["tokens"]}).json()
    assert back["prompt"] == text


def test_count_equals_generator_prompt_tokens(client: httpx.Client, openai_client) -> None:
    prompt = "Tokenize me once: 世界 🎉"
    count = client.post("/v1/tokenize", json={"model": GENERATOR, "prompt": prompt}).json()["count"]
    usage = openai_client.completions.create(model=GENERATOR, prompt=prompt, max_tokens=1).usage
    assert count == usage.prompt_tokens


def test_chat_messages_count_equals_chat_prompt_tokens(client: httpx.Client, openai_client) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 👋"}]
    tokens = client.post("/v1/tokenize", json={"model": GENERATOR, "messages": messages,
                                               "return_token_strs": True}).json()
    usage = openai_client.chat.completions.create(model=GENERATOR, messages=messages, max_tokens=1).usage
    assert tokens["count"] == usage.prompt_tokens
    assert len(tokens["token_strs"]) == tokens["count"]


def test_classifier_tokenizer_is_served_too(client: httpx.Client) -> None:
    body = client.post("/v1/tokenize", json={"model": CLASSIFIER, "prompt": "hello world"}).json()
    assert body["count"] >= 4  # [CLS] hello world [SEP]
