"""Rules shared by chat and text completions: the token budget and structured output."""

from __future__ import annotations

import json
import re

from maas.config import GeneratorModelConfig
from maas.protocol.chat import GenerationParams, ResponseFormat
from maas.protocol.errors import ContextLengthExceededError, InvalidRequestError


def resolve_max_tokens(
    requested: int | None, prompt_tokens: int, config: GeneratorModelConfig, param: str
) -> int:
    """The ``max_tokens`` to generate: bounded by the config and by the context left."""
    room = config.max_model_len - prompt_tokens
    if requested is None:
        return max(1, min(config.max_tokens_limit, room))
    if requested > config.max_tokens_limit:
        raise InvalidRequestError(
            f"{param} must be at most {config.max_tokens_limit} for this model.", param
        )
    if requested > room:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {config.max_model_len} tokens; the prompt "
            f"has {prompt_tokens} tokens and {param} asks for {requested}.",
            param,
        )
    return requested


def check_prompt_logprobs(params: GenerationParams, config: GeneratorModelConfig, param: str) -> None:
    """Refuse prompt log probabilities on a generator that serves LoRA adapters: vLLM's V1 engine
    cannot compute them there (its LoRA logits mapping has one row per request, not per prompt
    token), and a batch holding such a request and any other one kills the engine for every
    caller (vllm-project/vllm#16668, #29955)."""
    if params.prompt_logprobs is not None and config.lora.enabled:
        raise InvalidRequestError(
            f"Prompt log probabilities (echo with logprobs, or prompt_logprobs) are not available on "
            f"'{config.name}': it serves LoRA adapters, and vLLM cannot compute them on such an engine.",
            param, code="unsupported_with_lora")


def with_response_format(params: GenerationParams, response_format: ResponseFormat | None) -> GenerationParams:
    """Structured output: JSON of a schema (compiled here, so a bad schema is a 400) or any object."""
    if response_format is None or response_format.type == "text":
        return params
    if response_format.type == "json_object":
        return params.model_copy(update={"json_object": True})
    schema = json.dumps(response_format.json_schema.json_schema)  # type: ignore[union-attr]
    check_json_schema(schema)
    return params.model_copy(update={"json_schema": schema})


def check_json_schema(schema: str, param: str = "response_format") -> None:
    """Refuse a JSON schema that is invalid or that structured decoding cannot compile."""
    import jsonschema
    import xgrammar

    try:
        jsonschema.validators.validator_for(json.loads(schema)).check_schema(json.loads(schema))
        xgrammar.Grammar.from_json_schema(schema)
    except Exception as exc:  # noqa: BLE001 - every failure is the client's schema
        message = re.sub(r"^(\[[^]]*\] )?\S+\.cc:\d+: ", "", str(exc).splitlines()[0])[:300]
        where = "response_format.json_schema.schema" if param == "response_format" else param
        raise InvalidRequestError(f"{where} cannot be used: {message}", param,
                                  code="invalid_json_schema") from None
