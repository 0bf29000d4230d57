"""``/v1/responses``: a Responses request as a chat request, and the chat's answer as a response.

The Responses API is served over the chat path (its template, sampling rules, function calling
and engines), so both answer alike; only the shapes differ: input items become chat messages
(a ``function_call`` an assistant tool call, a ``function_call_output`` a tool message), and the
chat's answer becomes output items (a message, and a ``function_call`` per tool call). Streams
are in :mod:`maas.endpoints.generation.response_stream`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from maas.edge.http import validation_error
from maas.endpoints.generation.protocol import (
    FunctionCallInput,
    FunctionCallItem,
    FunctionTool,
    IncompleteDetails,
    InputItem,
    InputMessage,
    NamedFunctionChoice,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from maas.protocol.base import MAX_MESSAGES, UsageInfo
from maas.protocol.chat import ChatCompletionRequest, ChatCompletionResponse, ToolCall
from maas.protocol.errors import InvalidRequestError

TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def chat_request(request: ResponsesRequest, context: Sequence[InputItem] = ()) -> ChatCompletionRequest:
    """The chat request answering ``request`` after ``context`` (the items of the stored responses
    it continues); a 400 for what the Responses route does not offer."""
    items = [*context, *input_items(request)]
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    messages += chat_messages(items, len(context))
    if len(messages) > MAX_MESSAGES:
        where = "previous_response_id" if context else "input"
        raise InvalidRequestError(f"{where}: at most {MAX_MESSAGES} messages with instructions and the "
                                  f"earlier responses' items (this request has {len(messages)}).", where)
    text_format = request.text.format if request.text else None
    try:
        return ChatCompletionRequest(
            model=request.model, messages=messages, max_completion_tokens=request.max_output_tokens,
            temperature=request.temperature, top_p=request.top_p, stream=request.stream,
            stream_options={"include_usage": True} if request.stream else None, user=request.user,
            response_format=text_format.response_format() if text_format else None,
            **chat_tools(request))
    except ValidationError as exc:  # a rule of chat that the Responses schema does not state
        raise validation_error(exc.errors()) from None


def input_items(request: ResponsesRequest) -> list[InputItem]:
    """The request's ``input`` as items (a text is one user message)."""
    if isinstance(request.input, str):
        return [InputMessage(role="user", content=request.input)]
    return list(request.input)


def chat_messages(items: Sequence[InputItem], first: int = 0) -> list[dict[str, Any]]:
    """Chat messages of Responses items: a ``function_call`` joins the assistant message before it
    (or starts one), a ``function_call_output`` is a tool message. ``first``: the index of the
    request's own first item (errors name ``input[i]`` from there)."""
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, item in enumerate(items):
        if isinstance(item, InputMessage):
            messages.append({"role": item.role, "content": _text_of(item, i - first)})
        elif isinstance(item, FunctionCallInput):
            names[item.call_id] = item.name
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output,
                             **({"name": names[item.call_id]} if item.call_id in names else {})})
    return messages


def chat_tools(request: ResponsesRequest) -> dict[str, Any]:
    """The chat fields of the request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``."""
    fields: dict[str, Any] = {}
    if request.tools:
        fields["tools"] = [_chat_tool(tool, i) for i, tool in enumerate(request.tools)]
    choice = request.tool_choice
    if choice is not None:
        fields["tool_choice"] = choice if isinstance(choice, str) else {
            "type": "function", "function": {"name": choice.name}}
    if request.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def _chat_tool(tool: FunctionTool, index: int) -> dict[str, Any]:
    if tool.type != "function":
        raise InvalidRequestError(f"tools[{index}] is of type '{tool.type}': only function tools are "
                                  "supported.", f"tools[{index}].type")
    if tool.name is None:
        raise InvalidRequestError(f"tools[{index}]: a function tool needs a name.", f"tools[{index}].name")
    return {"type": "function", "function": tool.model_dump(
        include={"name", "description", "parameters", "strict"}, exclude_none=True)}


def _text_of(message: InputMessage, index: int) -> str:
    if isinstance(message.content, str):
        return message.content
    for j, part in enumerate(message.content):
        if part.type not in TEXT_PARTS or part.text is None:
            raise InvalidRequestError(
                f"input[{index}].content[{j}] is {part.type!r}: this model takes text only "
                "(input_text).", f"input[{index}].content[{j}]")
    return "".join(part.text or "" for part in message.content)


def response_usage(usage: UsageInfo) -> ResponseUsage:
    return ResponseUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                         total_tokens=usage.total_tokens)


def new_response(request: ResponsesRequest, status: str = "completed", store: bool = False) -> ResponseObject:
    """A response object echoing the request's settings, with no output yet."""
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else None
    choice = request.tool_choice
    return ResponseObject(
        model=request.model, status=status, instructions=request.instructions,  # type: ignore[arg-type]
        max_output_tokens=request.max_output_tokens, temperature=request.temperature,
        top_p=request.top_p, metadata=request.metadata or {}, store=store,
        previous_response_id=request.previous_response_id,
        tools=[t.model_dump(exclude_none=True) for t in request.tools or []],
        tool_choice=choice.model_dump() if isinstance(choice, NamedFunctionChoice) else choice or "auto",
        parallel_tool_calls=request.parallel_tool_calls is not False, background=bool(request.background),
        **({"text": text} if text else {}))


def finished(response: ResponseObject, output: list[OutputItem], finish_reason: str | None,
             usage: UsageInfo | None) -> ResponseObject:
    """``response`` with its output items, its status and usage set."""
    incomplete = finish_reason == "length"
    for item in output:
        item.status = "incomplete" if incomplete else "completed"
    response.output = output
    response.status = "incomplete" if incomplete else "completed"
    response.incomplete_details = IncompleteDetails(reason="max_output_tokens") if incomplete else None
    response.usage = response_usage(usage) if usage else None
    return response


def output_items(text: str, calls: Sequence[ToolCall]) -> list[OutputItem]:
    """The output of an answer: its text as a message (left out when empty beside function calls),
    then one ``function_call`` item per tool call."""
    items: list[OutputItem] = [OutputMessage(content=[OutputText(text=text)])] if text or not calls else []
    return items + [FunctionCallItem(call_id=call.id, name=call.function.name, arguments=call.function.arguments)
                    for call in calls]


def response_from_chat(request: ResponsesRequest, answer: ChatCompletionResponse,
                       store: bool = False) -> ResponseObject:
    """The whole response of a chat answer."""
    choice = answer.choices[0]
    output = output_items(choice.message.content or "", choice.message.tool_calls or [])
    return finished(new_response(request, store=store), output, choice.finish_reason, answer.usage)
