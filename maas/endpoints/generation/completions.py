"""``/v1/completions``: what a text-completion request may ask, its prompts and parameters."""

from __future__ import annotations

from maas.config import GeneratorModelConfig
from maas.endpoints.generation.completions_echo import check_echo, with_prompt_logprobs
from maas.endpoints.generation.protocol import CompletionRequest
from maas.generation_rules.params import check_prompt_logprobs, resolve_max_tokens
from maas.protocol.chat import GenerationParams

Prompt = str | list[int]


def reject_unsupported(request: CompletionRequest) -> None:
    """Clear 400s for completion features this service does not offer (``suffix``; ``echo`` and
    ``prompt_logprobs`` when streamed)."""
    check_echo(request)


def completion_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    """The prompts of a completions request: one text, texts, token ids or lists of ids."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def completion_params(request: CompletionRequest, longest_prompt_tokens: int,
                      config: GeneratorModelConfig) -> GenerationParams:
    """The engine parameters of a completion whose longest prompt has that many tokens."""
    max_tokens = resolve_max_tokens(request.max_tokens, longest_prompt_tokens, config, "max_tokens")
    params = with_prompt_logprobs(request.generation_params(max_tokens, request.logprobs), request)
    check_prompt_logprobs(params, config, "prompt_logprobs" if request.prompt_logprobs is not None else "echo")
    return params
