"""The per-request budget (``ingress.limits``, :class:`maas.limits.RequestBudget`): what one chat,
completion or tokenize request may ask for, checked before any engine work.

What the request's fields say (sequences, tools, schema size and pattern repetitions, text to
tokenize) is checked before its prompts are rendered and tokenized (and its schemas compiled);
what needs the token counts (tokens to generate, tokens in all, log probabilities to return)
right after. Over a bound, a 400 ``request_too_large``
names the parameter to lower.
"""

from __future__ import annotations

import json

from maas.endpoints.encoding.protocol import TokenizeRequest
from maas.endpoints.generation.completions import completion_prompts
from maas.endpoints.generation.protocol import CompletionRequest
from maas.endpoints.generation.schema_cost import repeats
from maas.limits import RequestBudget
from maas.protocol.chat import ChatCompletionRequest, GenerationParams
from maas.protocol.errors import RequestTooLargeError


def check_chat(request: ChatCompletionRequest, limits: RequestBudget) -> None:
    """A chat's choices, tools and JSON schemas (before they are compiled or rendered)."""
    check_sequences(1, request.n, limits)
    tools = request.tools or []
    if len(tools) > limits.max_tools:
        raise RequestTooLargeError(
            f"This request has {len(tools)} tools; this service takes at most {limits.max_tools}.", "tools")
    tool_chars = sum(len(json.dumps(tool.function.parameters)) for tool in tools if tool.function.parameters)
    format_schema = request.response_format.json_schema if request.response_format else None
    format_chars = len(json.dumps(format_schema.json_schema)) if format_schema else 0
    if tool_chars + format_chars > limits.max_schema_chars:
        raise RequestTooLargeError(
            f"The JSON schemas of this request (tools' parameters and response_format) have "
            f"{tool_chars + format_chars} characters; this service compiles at most "
            f"{limits.max_schema_chars} per request.", "tools" if tool_chars >= format_chars else "response_format")
    tool_repeats = repeats([tool.function.parameters for tool in tools if tool.function.parameters])
    format_repeats = repeats([format_schema.json_schema] if format_schema else [])
    check_pattern_repeats(tool_repeats, format_repeats, limits)


def check_pattern_repeats(tool_repeats: list[int], format_repeats: list[int], limits: RequestBudget) -> None:
    """The counted repetitions of the request's ``pattern``s (:mod:`maas.endpoints.generation.schema_cost`):
    what structured decoding writes out when it compiles them."""
    worst = max([*tool_repeats, *format_repeats], default=0)
    if worst > limits.max_pattern_repeat:
        param = "tools" if worst in tool_repeats else "response_format"
        raise RequestTooLargeError(
            f"A pattern of this request's JSON schemas repeats {worst} times (its counted repetitions "
            f"such as {{1,{worst}}}, nested ones multiplied); this service compiles patterns of at most "
            f"{limits.max_pattern_repeat}: bound a length with maxLength or maxItems instead.", param)
    tool_total, format_total = (sum(r for r in counts if r > 1) for counts in (tool_repeats, format_repeats))
    total = tool_total + format_total
    if total > limits.max_pattern_repeat_total:
        param = "tools" if tool_total >= format_total else "response_format"
        raise RequestTooLargeError(
            f"The patterns of this request's JSON schemas repeat {total} times in all (their counted "
            f"repetitions such as {{1,64}}); this service compiles at most {limits.max_pattern_repeat_total} "
            f"per request: use fewer patterns, or maxLength and maxItems.", param)


def check_completion(request: CompletionRequest, limits: RequestBudget) -> None:
    """A completion's prompts x ``n``."""
    check_sequences(len(completion_prompts(request.prompt)), request.n, limits)


def check_sequences(prompts: int, n: int, limits: RequestBudget) -> None:
    """Prompts x ``n``: the sequences the engine runs for one request."""
    if prompts * n > limits.max_sequences:
        raise RequestTooLargeError(
            f"This request asks for {prompts} prompt(s) x n {n} = {prompts * n} sequences; this service "
            f"runs at most {limits.max_sequences} per request: send fewer prompts or a lower n.",
            "n" if n > 1 else "prompt")


def check_chat_tokens(request: ChatCompletionRequest, prompt_tokens: int, params: GenerationParams,
                      limits: RequestBudget) -> None:
    """A chat's tokens and log probabilities, once its prompt is tokenized."""
    max_param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    check_tokens([prompt_tokens], params, limits, max_param)
    check_logprobs(logprob_entries([prompt_tokens], params, 0), limits, "top_logprobs")


def check_completion_tokens(request: CompletionRequest, prompt_tokens: list[int], params: GenerationParams,
                            limits: RequestBudget) -> None:
    """A completion's tokens and log probabilities (``echo`` and ``prompt_logprobs`` included),
    once its prompts are tokenized."""
    check_tokens(prompt_tokens, params, limits, "max_tokens")
    prompt_views = int(request.echo and request.logprobs is not None) + int(request.prompt_logprobs is not None)
    param = "logprobs" if request.logprobs is not None else "prompt_logprobs"
    check_logprobs(logprob_entries(prompt_tokens, params, prompt_views), limits, param)


def check_tokens(prompt_tokens: list[int], params: GenerationParams, limits: RequestBudget,
                 max_param: str) -> None:
    """Prompts x ``n`` x ``max_tokens`` to generate, and x (prompt + ``max_tokens``) in all."""
    sequences = len(prompt_tokens) * params.n
    generated = sequences * params.max_tokens
    if generated > limits.max_generated_tokens:
        raise RequestTooLargeError(
            f"This request may generate {sequences} sequences x {params.max_tokens} tokens = {generated} "
            f"tokens; this service generates at most {limits.max_generated_tokens} per request: lower "
            f"{max_param} or n, or send fewer prompts.", max_param)
    total = params.n * sum(tokens + params.max_tokens for tokens in prompt_tokens)
    if total > limits.max_total_tokens:
        raise RequestTooLargeError(
            f"This request's sequences hold {total} prompt and generated tokens in all; this service "
            f"takes at most {limits.max_total_tokens} per request: send fewer or shorter prompts, or "
            f"lower {max_param} or n.", max_param)


def logprob_entries(prompt_tokens: list[int], params: GenerationParams, prompt_views: int) -> int:
    """Log probabilities an answer may hold: for every choice, each generated position with
    ``logprobs`` and each prompt position each time the answer shows the prompt's, x (1 + the
    alternatives). Every choice carries its own copy of its prompt's in the JSON answer."""
    entries = 0
    if params.logprobs is not None:
        entries += len(prompt_tokens) * params.n * params.max_tokens * (params.logprobs + 1)
    if prompt_views and params.prompt_logprobs is not None:
        entries += prompt_views * params.n * sum(prompt_tokens) * (params.prompt_logprobs + 1)
    return entries


def check_logprobs(entries: int, limits: RequestBudget, param: str) -> None:
    if entries > limits.max_logprob_entries:
        raise RequestTooLargeError(
            f"The answer to this request may hold {entries} log probabilities; this service returns at "
            f"most {limits.max_logprob_entries} per request: ask for fewer alternatives, tokens, choices "
            f"or prompts.", param)


def check_tokenize(request: TokenizeRequest, limits: RequestBudget) -> None:
    """The text of a ``/v1/tokenize`` request."""
    if request.prompt is not None:
        chars, param = len(request.prompt), "prompt"
    else:
        chars, param = sum(len(message.text()) for message in request.messages or []), "messages"
    if chars > limits.max_tokenize_chars:
        raise RequestTooLargeError(
            f"This request has {chars} characters of text; this service tokenizes at most "
            f"{limits.max_tokenize_chars} per request.", param)
