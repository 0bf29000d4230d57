"""The OpenAI request rules of maas/endpoints/, tested as plain Python (no Ray, no HTTP)."""

from __future__ import annotations

import base64
import struct
from types import SimpleNamespace

import pytest

from maas.config import GeneratorModelConfig
from maas.endpoints.encoding.protocol import EmbeddingRequest
from maas.endpoints.encoding.rules import (
    classify_response,
    embedding_response,
    embedding_texts,
    encode_embedding,
)
from maas.endpoints.generation import chat, completions
from maas.endpoints.generation.protocol import CompletionRequest
from maas.generation_rules.params import resolve_max_tokens
from maas.protocol.chat import ChatCompletionRequest
from maas.protocol.errors import ContextLengthExceededError, InvalidRequestError

CONFIG = GeneratorModelConfig(name="chat", path="unused", max_model_len=100, max_tokens_limit=40)
HI = [{"role": "user", "content": "hi"}]


def test_max_tokens_is_bounded_by_the_config_and_the_context_left() -> None:
    assert resolve_max_tokens(None, 10, CONFIG, "max_tokens") == 40
    assert resolve_max_tokens(None, 90, CONFIG, "max_tokens") == 10
    assert resolve_max_tokens(None, 100, CONFIG, "max_tokens") == 1
    assert resolve_max_tokens(5, 10, CONFIG, "max_tokens") == 5
    with pytest.raises(InvalidRequestError, match="at most 40") as over:
        resolve_max_tokens(41, 10, CONFIG, "max_completion_tokens")
    assert over.value.param == "max_completion_tokens"
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 100"):
        resolve_max_tokens(20, 90, CONFIG, "max_tokens")


def test_chat_params_resolve_the_budget_and_structured_output() -> None:
    request = ChatCompletionRequest(model="chat", messages=HI, max_completion_tokens=7,
                                    response_format={"type": "json_schema", "json_schema": {
                                        "name": "x", "schema": {"type": "object"}}})
    params = chat.chat_params(request, prompt_tokens=12, config=CONFIG)
    assert params.max_tokens == 7 and params.json_schema == '{"type": "object"}'
    assert chat.chat_params(ChatCompletionRequest(model="chat", messages=HI), 12, CONFIG).max_tokens == 40
    bad = ChatCompletionRequest(model="chat", messages=HI, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}})
    with pytest.raises(InvalidRequestError, match="cannot be used") as error:
        chat.chat_params(bad, 12, CONFIG)
    assert error.value.param == "response_format" and error.value.code == "invalid_json_schema"


def test_chat_refuses_structured_output_with_several_choices() -> None:
    request = ChatCompletionRequest(model="chat", messages=HI, n=2, temperature=1.0,
                                    response_format={"type": "json_object"})
    with pytest.raises(InvalidRequestError) as error:
        chat.reject_unsupported(request)
    assert error.value.param == "n"


def test_completion_prompts_of_every_shape() -> None:
    assert completions.completion_prompts("a") == ["a"]
    assert completions.completion_prompts(["a", "b"]) == ["a", "b"]
    assert completions.completion_prompts([1, 2, 3]) == [[1, 2, 3]]
    assert completions.completion_prompts([[1], [2, 3]]) == [[1], [2, 3]]
    with pytest.raises(InvalidRequestError) as error:
        completions.reject_unsupported(CompletionRequest(model="chat", prompt="a", suffix="z"))
    assert error.value.param == "suffix"
    params = completions.completion_params(CompletionRequest(model="chat", prompt="a", max_tokens=3), 5, CONFIG)
    assert params.max_tokens == 3


def test_prompt_logprobs_are_refused_on_a_lora_generator() -> None:
    """vLLM's engine with LoRA on dies when a prompt-logprobs request shares a batch: a 400 instead."""
    lora = CONFIG.model_copy(update={"lora": CONFIG.lora.model_copy(update={"enabled": True})})
    echo = CompletionRequest(model="chat", prompt="a", max_tokens=1, echo=True, logprobs=1)
    vllm_extra = CompletionRequest(model="chat", prompt="a", max_tokens=1, prompt_logprobs=0)
    for request, param in ((echo, "echo"), (vllm_extra, "prompt_logprobs")):
        assert completions.completion_params(request, 5, CONFIG).prompt_logprobs is not None
        with pytest.raises(InvalidRequestError, match="serves LoRA adapters") as error:
            completions.completion_params(request, 5, lora)
        assert error.value.param == param and error.value.code == "unsupported_with_lora"
    echo_only = CompletionRequest(model="chat", prompt="a", max_tokens=1, echo=True)
    assert completions.completion_params(echo_only, 5, lora).prompt_logprobs is None


def test_embeddings_take_text_and_answer_floats_or_base64() -> None:
    assert embedding_texts(EmbeddingRequest(model="e", input="a")) == ["a"]
    with pytest.raises(InvalidRequestError, match="token ids"):
        embedding_texts(EmbeddingRequest(model="e", input=[1, 2]))
    packed = base64.b64decode(encode_embedding([0.5, -1.0], "base64"))
    assert struct.unpack("<2f", packed) == (0.5, -1.0)
    vectors = [SimpleNamespace(vector=[0.6, 0.8], num_tokens=3)]
    response = embedding_response(EmbeddingRequest(model="e", input="a"), vectors)
    assert response.data[0].embedding == [0.6, 0.8] and response.usage.prompt_tokens == 3
    with pytest.raises(InvalidRequestError) as error:
        embedding_response(EmbeddingRequest(model="e", input="a", dimensions=3), vectors)
    assert error.value.param == "dimensions"


def test_classify_response_numbers_the_texts() -> None:
    results = [SimpleNamespace(label="pos", probs=[0.2, 0.8], labels=["neg", "pos"], num_tokens=4)] * 2
    response = classify_response("sentiment/v1", results)
    assert [d.index for d in response.data] == [0, 1] and response.usage.total_tokens == 8
    assert response.model == "sentiment/v1" and response.data[0].num_classes == 2
