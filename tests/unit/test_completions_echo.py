"""``echo`` and prompt log probabilities on completions (maas/endpoints/generation/completions_echo.py), and
the engine-wide compact JSON setting of structured output."""

from __future__ import annotations

import pytest

from maas.endpoints.generation.assemble import completion_response
from maas.endpoints.generation.completions_echo import check_echo, with_echo, with_prompt_logprobs
from maas.endpoints.generation.protocol import CompletionRequest
from maas.protocol.chat import (
    GenerationChunk,
    GenerationParams,
    GenerationResult,
    PromptLogprob,
    TokenLogprob,
)
from maas.protocol.errors import InvalidRequestError


def request(**fields: object) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "Hello world", **fields})


def result() -> GenerationResult:
    """A prompt of 2 tokens (ids 7, 8) and an answer of 1 token."""
    prompt = [None, {"8": PromptLogprob(logprob=-2.5, rank=3, decoded_token=" world"),
                     "9": PromptLogprob(logprob=-0.5, rank=1, decoded_token="!")}]
    answer = [TokenLogprob(token=".", logprob=-0.1)]
    return GenerationResult(chunks=[GenerationChunk(index=0, text=".", token_ids=[5], logprobs=answer,
                                                    finish_reason="length")],
                            prompt_tokens=2, completion_tokens=1, prompt_token_ids=[7, 8],
                            prompt_logprobs=prompt, prompt_text="Hello world",
                            prompt_token_strs=["Hello", " world"])


def test_echo_with_logprobs_puts_the_prompt_tokens_first() -> None:
    req = request(echo=True, logprobs=1, max_tokens=1)
    params = with_prompt_logprobs(GenerationParams(max_tokens=1), req)
    assert params.prompt_logprobs == 1 and params.echo
    response = with_echo(completion_response("m", [result()], 1), [result()], req, ["Hello world"])
    choice = response.choices[0]
    assert choice.text == "Hello world."
    assert choice.logprobs.tokens == ["Hello", " world", "."]
    assert choice.logprobs.token_logprobs == [None, -2.5, -0.1]
    assert choice.logprobs.top_logprobs[0] is None
    assert choice.logprobs.top_logprobs[1] == {" world": -2.5, "!": -0.5}
    assert choice.logprobs.text_offset == [0, 5, 11]
    assert choice.prompt_logprobs is None  # vLLM's extra field only when asked for


def test_prompt_logprobs_field_and_echo_of_token_ids() -> None:
    req = CompletionRequest(model="m", prompt=[7, 8], prompt_logprobs=2)
    assert with_prompt_logprobs(GenerationParams(max_tokens=1), req).prompt_logprobs == 2
    response = with_echo(completion_response("m", [result()], 1), [result()], req, [[7, 8]])
    assert response.choices[0].text == "." and response.choices[0].prompt_logprobs[1]["8"].logprob == -2.5
    echoed = with_echo(completion_response("m", [result()], 1), [result()], req.model_copy(update={"echo": True}),
                       [[7, 8]])
    assert echoed.choices[0].text == "Hello world."


def test_without_echo_nothing_changes() -> None:
    req = request(logprobs=1)
    assert with_prompt_logprobs(GenerationParams(max_tokens=1), req).prompt_logprobs is None
    response = completion_response("m", [result()], 1)
    assert with_echo(response, [result()], req, ["Hello world"]) == response


@pytest.mark.parametrize(("fields", "param"), [({"echo": True, "stream": True}, "echo"),
                                              ({"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
                                              ({"suffix": "x"}, "suffix")])
def test_unsupported_combinations(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_echo(request(**fields))
    assert info.value.param == param


def test_engine_structured_output_is_compact(smollm2_dir) -> None:
    from maas.config import GeneratorModelConfig
    from maas.engines.generator import build_engine_args

    args = build_engine_args(GeneratorModelConfig(name="m", path=str(smollm2_dir)), on_gpu=False)
    assert args.structured_outputs_config.disable_any_whitespace
    assert args.structured_outputs_config.backend == "xgrammar"


def test_a_prompts_log_probabilities_are_built_once_for_its_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """``echo`` with ``logprobs`` and ``n``: one prompt part per prompt, shared, never changed."""
    from maas.endpoints.generation import completions_echo

    built: list[int] = []
    real = completions_echo.prompt_part
    monkeypatch.setattr(completions_echo, "prompt_part", lambda result, top: built.append(top) or real(result, top))
    two = result().model_copy(update={"chunks": [result().chunks[0], result().chunks[0].model_copy(update={"index": 1})]})
    req = request(echo=True, logprobs=1, max_tokens=1, n=2, prompt=["Hello world", "Hello world"])
    response = with_echo(completion_response("m", [two, two], 2), [two, two], req, ["Hello world"] * 2)
    assert built == [1, 1]  # two prompts, four choices
    assert [c.logprobs.tokens for c in response.choices] == [["Hello", " world", "."]] * 4
    assert [c.logprobs.text_offset for c in response.choices] == [[0, 5, 11]] * 4
    assert response.choices[0].logprobs.top_logprobs[1] is response.choices[1].logprobs.top_logprobs[1]
    assert response.model_dump_json().count('"tokens":["Hello"," world","."]') == 4
