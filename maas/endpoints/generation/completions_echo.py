"""``echo`` and prompt log probabilities on ``/v1/completions`` (plain Python).

Evaluation harnesses (lm-eval's ``local-completions``) score a text by sending it with
``echo: true, logprobs: 1, max_tokens: 1`` and reading the prompt's token log probabilities
back: the first token's is null (nothing precedes it). The numbers are vLLM's
``prompt_logprobs`` of the same prompt; vLLM's own extra field ``prompt_logprobs`` (per
token, the candidates by token id) is returned as vLLM's server returns it.
"""

from __future__ import annotations

from maas.endpoints.generation.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from maas.protocol.chat import GenerationParams, GenerationResult
from maas.protocol.errors import InvalidRequestError


def check_echo(request: CompletionRequest) -> None:
    """The prompt comes back in whole answers only."""
    if request.stream and request.echo:
        raise InvalidRequestError("echo is not supported with stream: true.", "echo")
    if request.stream and request.prompt_logprobs is not None:
        raise InvalidRequestError("prompt_logprobs is not supported with stream: true.", "prompt_logprobs")
    if request.suffix:
        raise InvalidRequestError("suffix is not supported.", "suffix")


def with_prompt_logprobs(params: GenerationParams, request: CompletionRequest) -> GenerationParams:
    """Ask the engine for the prompt's log probabilities (and text) when the answer shows them."""
    count = request.prompt_logprobs
    if count is None and request.echo and request.logprobs is not None:
        count = request.logprobs
    return params.model_copy(update={"prompt_logprobs": count, "echo": request.echo})


def with_echo(response: CompletionResponse, results: list[GenerationResult], request: CompletionRequest,
              prompts: list[str | list[int]]) -> CompletionResponse:
    """The answer with each prompt in front (``echo``) and vLLM's ``prompt_logprobs`` if asked for.

    A prompt's log probabilities are built once and shared by its ``n`` choices (the JSON answer
    still repeats them in each choice)."""
    if not request.echo and request.prompt_logprobs is None:
        return response
    parts: dict[int, CompletionLogprobs] = {}
    choices = []
    for choice in response.choices:
        prompt_index = choice.index // request.n
        result, prompt = results[prompt_index], prompts[prompt_index]
        if request.prompt_logprobs is not None:
            choice = choice.model_copy(update={"prompt_logprobs": result.prompt_logprobs})
        if request.echo:
            if choice.logprobs is not None and prompt_index not in parts:
                parts[prompt_index] = prompt_part(result, request.logprobs or 0)
            choice = echoed(choice, parts.get(prompt_index),
                            prompt if isinstance(prompt, str) else result.prompt_text or "")
        choices.append(choice)
    return response.model_copy(update={"choices": choices})


def echoed(choice: CompletionChoice, prompt_logprobs: CompletionLogprobs | None, prompt_text: str) -> CompletionChoice:
    """One choice with its prompt's text (and, with ``logprobs``, the prompt's part of them, which
    is not changed: it may be shared) in front."""
    logprobs = choice.logprobs
    if logprobs is not None and prompt_logprobs is not None:
        logprobs = CompletionLogprobs.model_construct(  # the shared parts as they are, not copied
            tokens=prompt_logprobs.tokens + logprobs.tokens,
            token_logprobs=prompt_logprobs.token_logprobs + logprobs.token_logprobs,
            top_logprobs=prompt_logprobs.top_logprobs + logprobs.top_logprobs,
            text_offset=prompt_logprobs.text_offset + [offset + len(prompt_text) for offset in logprobs.text_offset],
        )
    return choice.model_copy(update={"text": prompt_text + choice.text, "logprobs": logprobs})


def prompt_part(result: GenerationResult, top: int) -> CompletionLogprobs:
    """The legacy completions log probabilities of a prompt: tokens, their log probabilities (the
    first null), the ``top`` alternatives (and the token itself), and offsets in the prompt text."""
    ids, positions, texts = result.prompt_token_ids or [], result.prompt_logprobs or [], result.prompt_token_strs or []
    part = CompletionLogprobs()
    offset = 0
    for index, (token_id, text) in enumerate(zip(ids, texts)):
        position = positions[index] if index < len(positions) else None
        chosen = position.get(str(token_id)) if position else None
        part.tokens.append(text)
        part.token_logprobs.append(chosen.logprob if chosen else None)
        part.top_logprobs.append(None if not position else {
            (lp.decoded_token if lp.decoded_token is not None else f"token_id:{tid}"): lp.logprob
            for tid, lp in position.items() if tid == str(token_id) or (lp.rank or 0) <= top})
        part.text_offset.append(offset)
        offset += len(text)
    return part
