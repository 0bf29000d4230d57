"""``/v1/messages``: a Messages request as a chat request, and the chat's answer as a message.

The Messages API is served over the chat path (its template, tools, sampling rules, budget, fair
share and engines), so both answer alike and only the shapes differ, as vLLM's Anthropic server
does (``vllm/entrypoints/anthropic/serving.py``, whose mapping this follows):

- ``system`` becomes a system message; a user's ``tool_result`` blocks become ``tool`` messages
  (before the user's text), an assistant's ``tool_use`` blocks its ``tool_calls``;
- ``tools`` become function tools (``input_schema`` their ``parameters``); ``tool_choice``
  ``auto``/``any``/``tool``/``none`` becomes ``auto``/``required``/the named function/``none``,
  ``disable_parallel_tool_use`` ``parallel_tool_calls: false``;
- ``output_config.format`` (a JSON schema) becomes ``response_format`` (structured output);
- ``stop_reason``: ``max_tokens`` when cut by ``max_tokens``; ``tool_use`` when the answer calls
  tools; ``stop_sequence`` (with ``stop_sequence`` set) when one of ``stop_sequences`` ended it;
  else ``end_turn``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from maas.edge.http import validation_error
from maas.endpoints.messages.protocol import (
    CountTokensRequest,
    InputMessage,
    MessageResponse,
    MessagesRequest,
    StopReason,
    TextBlock,
    TextContent,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseContent,
    UnsupportedBlock,
    Usage,
)
from maas.protocol.base import MAX_MESSAGES, UsageInfo
from maas.protocol.chat import ChatCompletionRequest, ChatCompletionResponse, ToolCall
from maas.protocol.errors import InvalidRequestError

TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def chat_request(request: MessagesRequest | CountTokensRequest) -> ChatCompletionRequest:
    """The chat request answering ``request`` (a 400 for what this service cannot take)."""
    check_request(request)
    messages = [{"role": "system", "content": system_text(request.system)}] if request.system else []
    for i, message in enumerate(request.messages):
        messages += chat_messages(message, i)
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequestError(f"messages: at most {MAX_MESSAGES} messages, tool results and system "
                                  "prompt together.", "messages")
    fields: dict[str, Any] = {"model": request.model, "messages": messages, **tool_fields(request)}
    if isinstance(request, MessagesRequest):
        fields.update(sampling_fields(request))
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:  # a rule of chat that the Messages schema does not state
        raise validation_error(exc.errors()) from None


def check_request(request: MessagesRequest | CountTokensRequest) -> None:
    """Clear 400s: thinking, a last assistant message (prefill), non-text blocks."""
    if request.thinking is not None and request.thinking.type != "disabled":
        raise InvalidRequestError(f"thinking.type '{request.thinking.type}' is not supported: the models "
                                  "served here do not think (send 'disabled' or leave it out).", "thinking")
    if request.messages[-1].role == "assistant":
        raise InvalidRequestError("The last message must be a user message: continuing an assistant "
                                  "message (prefill) is not supported.", f"messages.{len(request.messages) - 1}")
    for i, message in enumerate(request.messages):
        for j, block in enumerate(message.content if isinstance(message.content, list) else []):
            _check_block(block, message.role, f"messages.{i}.content.{j}")


def _check_block(block: Any, role: str, param: str) -> None:
    parts = block.content if isinstance(block, ToolResultBlock) and isinstance(block.content, list) else []
    for k, part in enumerate(parts):
        _check_block(part, "user", f"{param}.content.{k}")
    if isinstance(block, UnsupportedBlock):
        raise InvalidRequestError(f"{param} is a '{block.type}' block, but this service takes text, "
                                  "tool_use and tool_result blocks only.", param, code="unsupported_content_type")
    if isinstance(block, ToolResultBlock) and role != "user":
        raise InvalidRequestError(f"{param}: tool_result blocks belong in user messages.", param)
    if isinstance(block, ToolUseBlock) and role != "assistant":
        raise InvalidRequestError(f"{param}: tool_use blocks belong in assistant messages.", param)


def system_text(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(block.text for block in system)


def chat_messages(message: InputMessage, index: int) -> list[dict[str, Any]]:
    """The chat messages of one Messages turn: a user's tool results first (as ``tool``
    messages), then its text; an assistant's text and its tool calls in one message."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts = [block.text for block in message.content if isinstance(block, TextBlock)]
    results = [{"role": "tool", "tool_call_id": block.tool_use_id, "content": result_text(block)}
               for block in message.content if isinstance(block, ToolResultBlock)]
    calls = [{"id": block.id, "type": "function",
              "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}}
             for block in message.content if isinstance(block, ToolUseBlock)]
    if message.role == "assistant":
        return [{"role": "assistant", "content": "".join(texts) or None, **({"tool_calls": calls} if calls else {})}]
    return results + ([{"role": "user", "content": "".join(texts)}] if texts or not results else [])


def result_text(block: ToolResultBlock) -> str:
    """A tool's output as the text of a ``tool`` message."""
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        text = "\n".join(part.text for part in block.content if isinstance(part, TextBlock))
    return f"Error: {text}" if block.is_error else text


def tool_fields(request: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of the chat request."""
    fields: dict[str, Any] = {}
    if request.tools:
        fields["tools"] = [{"type": "function", "function": {
            "name": tool.name, "description": tool.description, "parameters": tool.input_schema}}
            for tool in request.tools]
    choice = request.tool_choice
    if choice is None:
        return fields
    fields["tool_choice"] = (TOOL_CHOICES[choice.type] if choice.type != "tool"
                             else {"type": "function", "function": {"name": choice.name}})  # type: ignore[union-attr]
    if getattr(choice, "disable_parallel_tool_use", None):
        fields["parallel_tool_calls"] = False
    return fields


def sampling_fields(request: MessagesRequest) -> dict[str, Any]:
    fields = {"max_tokens": request.max_tokens, "stop": request.stop_sequences, "temperature": request.temperature,
              "top_p": request.top_p, "top_k": request.top_k, "stream": request.stream,
              "user": request.metadata.user_id if request.metadata else None}
    if request.stream:
        fields["stream_options"] = {"include_usage": True}
    output_format = request.output_config.format if request.output_config else None
    if output_format is not None:
        fields["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "output", "schema": output_format.json_schema}}
    return {name: value for name, value in fields.items() if value is not None}


# ----------------------------------------------------------------------------- answers


def stop_reason(finish_reason: str | None, stop_string: str | None,
                called: bool) -> tuple[StopReason, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` of a chat choice's end."""
    if finish_reason == "length":
        return "max_tokens", None
    if called or finish_reason == "tool_calls":
        return "tool_use", None
    if stop_string is not None:
        return "stop_sequence", stop_string
    return "end_turn", None


def usage_of(usage: UsageInfo | None) -> Usage:
    return Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens) if usage else Usage()


def tool_input(arguments: str | None) -> dict[str, Any]:
    """A call's arguments as ``input``: the JSON object, or ``{}`` when they are not one (a call
    cut short by ``max_tokens``, whose ``stop_reason`` says so)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def tool_use(call: ToolCall) -> ToolUseContent:
    return ToolUseContent(id=call.id, name=call.function.name, input=tool_input(call.function.arguments))


def message_from_chat(answer: ChatCompletionResponse) -> MessageResponse:
    """The whole message of a chat answer."""
    choice = answer.choices[0]
    calls = choice.message.tool_calls or []
    text = choice.message.content or ""
    content: list[Any] = [TextContent(text=text)] if text else []
    content += [tool_use(call) for call in calls]
    reason, sequence = stop_reason(choice.finish_reason, choice.stop_reason, bool(calls))
    return MessageResponse(model=answer.model, content=content, stop_reason=reason, stop_sequence=sequence,
                           usage=usage_of(answer.usage))
