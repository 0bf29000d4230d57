"""``/v1/chat/completions``: what a chat request may ask, and its engine parameters."""

from __future__ import annotations

from maas.config import GeneratorModelConfig
from maas.generation_rules.params import resolve_max_tokens, with_response_format
from maas.generation_rules.tools import check_chat_request, with_tools
from maas.protocol.chat import ChatCompletionRequest, GenerationParams
from maas.protocol.errors import InvalidRequestError


def reject_unsupported(request: ChatCompletionRequest) -> None:
    """Clear 400s for chat features this service does not offer, and for bad tools, tool
    messages and non-text content (maas/generation_rules/tools.py)."""
    check_chat_request(request)
    if request.response_format and request.response_format.type != "text" and request.n > 1:
        raise InvalidRequestError("response_format with n > 1 is not supported.", "n")


def chat_params(request: ChatCompletionRequest, prompt_tokens: int,
                config: GeneratorModelConfig) -> GenerationParams:
    """The engine parameters of a chat whose rendered prompt has ``prompt_tokens`` tokens."""
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    max_tokens = resolve_max_tokens(request.requested_max_tokens(), prompt_tokens, config, param)
    params = request.generation_params(max_tokens, request.requested_logprobs())
    params = with_tools(params, request, config.tool_call_parser)
    return with_response_format(params, request.response_format)
