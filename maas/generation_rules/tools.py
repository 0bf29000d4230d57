"""Function calling on ``/v1/chat/completions``: request rules, prompt rendering, output parsing.

Plain Python (no Serve, no FastAPI; vLLM only inside :class:`AutoCalls`), used by the ingress
(rules, engine parameters), the tokenizer engine (rendering) and the generator engine (parsing).

- ``tool_choice`` named or ``required``: structured decoding with a JSON schema built from the
  tools as vLLM's OpenAI server builds it (``vllm/tool_parsers/utils.py``
  ``get_json_schema_from_tools``): the arguments object of the named function, or an array of
  ``{"name", "parameters"}`` objects, one of the tools each. Even a small model answers valid calls.
- ``auto``: the model writes what it wants; vLLM's tool parser named in the generator's config
  (``tool_call_parser``, e.g. ``hermes``) turns its text into content and tool calls, streamed.
- A chat template without tools gets the Hermes format (which the ``hermes`` parser reads):
  the tools in a system message, earlier calls as ``<tool_call>`` text, results as
  ``<tool_response>`` user messages.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Literal

from maas.generation_rules.params import check_json_schema
from maas.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    ChatTool,
    FunctionCallDelta,
    GenerationChunk,
    GenerationParams,
    MediaPart,
    ToolCallDelta,
)
from maas.protocol.errors import InvalidRequestError

logger = logging.getLogger(__name__)

ToolMode = Literal["auto", "named", "required"]

HERMES_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user query. "
    "Don't make assumptions about what values to plug into functions. Here are the available "
    "tools: <tools>{tools}</tools>\nFor each function call return a JSON object with the function "
    "name and arguments within <tool_call></tool_call> XML tags as follows:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-dict>}}\n</tool_call>'
)


def new_call_id() -> str:
    """An OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


# ----------------------------------------------------------------------------- request rules


def check_chat_request(request: ChatCompletionRequest) -> None:
    """400s for what a chat request cannot ask: non-text parts, bad tool messages, bad tools."""
    check_text_only(request.messages)
    check_tool_messages(request.messages)
    check_tools(request)


def check_text_only(messages: list[ChatMessage]) -> None:
    for i, message in enumerate(messages):
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            if isinstance(part, MediaPart):
                raise InvalidRequestError(
                    f"messages[{i}].content[{j}] is of type '{part.type}', but this model takes "
                    "text only: send text content parts.", f"messages.{i}.content.{j}.type",
                    code="unsupported_content_type")


def check_tool_messages(messages: list[ChatMessage]) -> None:
    for i, message in enumerate(messages):
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidRequestError(f"messages[{i}] has role 'tool' but no tool_call_id.",
                                      f"messages.{i}.tool_call_id")
        if message.tool_calls and message.role != "assistant":
            raise InvalidRequestError(f"messages[{i}]: only assistant messages have tool_calls.",
                                      f"messages.{i}.tool_calls")
        for j, call in enumerate(message.tool_calls or []):
            if not isinstance(_json_or_none(call.function.arguments), dict):
                raise InvalidRequestError(
                    f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON object as text.",
                    f"messages.{i}.tool_calls.{j}.function.arguments")


def check_tools(request: ChatCompletionRequest) -> None:
    """The tools' schemas compile, names are unique, and ``tool_choice`` fits the tools."""
    choice = request.tool_choice
    if choice is not None and choice != "none" and not request.tools:
        raise InvalidRequestError("tool_choice requires tools.", "tool_choice")
    names = [tool.function.name for tool in request.tools or []]
    for i, tool in enumerate(request.tools or []):
        if names.index(tool.function.name) != i:
            raise InvalidRequestError(f"tools[{i}]: the name '{tool.function.name}' is used twice.",
                                      f"tools.{i}.function.name")
        check_parameters(tool, f"tools.{i}.function.parameters")
    if not isinstance(choice, str) and choice is not None and choice.function.name not in names:
        raise InvalidRequestError(
            f"tool_choice names the function '{choice.function.name}', which is not in tools "
            f"({', '.join(names)}).", "tool_choice")
    mode = tool_mode(request)
    if mode in ("named", "required") and request.response_format and request.response_format.type != "text":
        raise InvalidRequestError("response_format cannot be combined with a named or required "
                                  "tool_choice.", "response_format")
    if mode is not None and request.n > 1:
        raise InvalidRequestError("tools with n > 1 are not supported.", "n")


def check_parameters(tool: ChatTool, param: str) -> None:
    """A tool's ``parameters`` must be a JSON schema of an object that structured decoding compiles."""
    schema = tool.function.parameters
    if not schema:
        return
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(f"{param} must be a JSON schema of type 'object'.", param,
                                  code="invalid_json_schema")
    check_json_schema(json.dumps(schema), param)


def tool_mode(request: ChatCompletionRequest) -> ToolMode | None:
    """How the answer becomes tool calls; None: plain text (no tools, or ``tool_choice: none``)."""
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return None
    if choice is None or choice == "auto":
        return "auto"
    return "required" if choice == "required" else "named"


# ----------------------------------------------------------------------------- engine parameters


def with_tools(params: GenerationParams, request: ChatCompletionRequest, parser: str | None) -> GenerationParams:
    """The generation parameters of a chat request with tools (unchanged without)."""
    mode = tool_mode(request)
    if mode is None or (mode == "auto" and parser is None):
        return params
    tools = [tool.model_dump(exclude_none=True) for tool in request.tools or []]
    if mode == "auto":
        return params.model_copy(update={"tool_mode": "auto", "tools": tools, "tool_parser": parser})
    name = request.tool_choice.function.name if mode == "named" else None  # type: ignore[union-attr]
    schema = tool_schema(tools, name, request.parallel_tool_calls)
    return params.model_copy(update={"tool_mode": mode, "tool_name": name, "tools": tools,
                                     "json_schema": json.dumps(schema)})


def tool_schema(tools: list[dict[str, Any]], name: str | None, parallel: bool | None = None) -> dict[str, Any]:
    """The JSON schema of a forced answer: the named function's arguments, or (``name`` None, i.e.
    ``required``) an array of ``{"name", "parameters"}`` calls, at most one if ``parallel`` is False."""
    by_name = {tool["function"]["name"]: tool["function"].get("parameters") for tool in tools}
    if name is not None:
        return _object_schema(by_name[name])
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": [
        {"properties": {"name": {"type": "string", "enum": [tool_name]},
                        "parameters": _object_schema(params)},
         "required": ["name", "parameters"]}
        for tool_name, params in by_name.items()]}}
    if parallel is False:
        schema["maxItems"] = 1
    defs = _hoisted_defs(schema["items"]["anyOf"])
    if defs:
        schema["$defs"] = defs
    return schema


def _object_schema(params: dict[str, Any] | None) -> dict[str, Any]:
    return params if params else {"type": "object", "properties": {}}


def _hoisted_defs(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """``$defs`` of each tool's parameters moved to the root (refs are ``#/$defs/...``)."""
    defs: dict[str, Any] = {}
    for i, call in enumerate(calls):
        params = dict(call["properties"]["parameters"])
        for key, value in params.pop("$defs", {}).items():
            if key in defs and defs[key] != value:
                raise InvalidRequestError(f"Tools define '$defs/{key}' differently.", "tools")
            defs[key] = value
        calls[i] = {**call, "properties": {**call["properties"], "parameters": params}}
    return defs


# ----------------------------------------------------------------------------- prompt rendering


def template_tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools the chat template shows the model (none with ``tool_choice: none``)."""
    if not request.tools or request.tool_choice == "none":
        return None
    return [tool.model_dump(exclude_none=True) for tool in request.tools]


def template_knows_tools(template: str) -> bool:
    """Whether a chat template renders ``tools`` and tool messages itself."""
    return "tools" in template and "tool" in template


def hermes_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Messages for a template without tools: the Hermes format, in system/user/assistant turns."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"})
        elif message.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                + "\n</tool_call>" for c in message["tool_calls"])
            text = f"{message['content']}\n{calls}" if message["content"] else calls
            rendered.append({"role": "assistant", "content": text})
        else:
            rendered.append({"role": message["role"], "content": message["content"]})
    if tools:
        system = HERMES_SYSTEM.format(tools=json.dumps(tools))
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{system}"}
        else:
            rendered.insert(0, {"role": "system", "content": system})
    return rendered


# ----------------------------------------------------------------------------- output parsing


class ToolCalls:
    """One choice's output turned into content and tool-call deltas, delta by delta."""

    called = False

    def apply(self, chunk: GenerationChunk) -> GenerationChunk:
        """The chunk with its text split into content and ``tool_calls`` deltas."""
        finished = chunk.finish_reason is not None
        content, calls = self.feed(chunk.text, chunk.token_ids, finished)
        self.called = self.called or bool(calls)
        finish = chunk.finish_reason
        if finished and self.called and finish == "stop":
            finish = "tool_calls"
        return chunk.model_copy(update={"text": content, "tool_calls": calls or None, "finish_reason": finish})

    def feed(self, text: str, token_ids: list[int], finished: bool) -> tuple[str, list[ToolCallDelta]]:
        raise NotImplementedError


class NamedCalls(ToolCalls):
    """``tool_choice`` naming a function: the output is its arguments, streamed as they come."""

    def __init__(self, name: str) -> None:
        self.name = name

    def feed(self, text: str, token_ids: list[int], finished: bool) -> tuple[str, list[ToolCallDelta]]:
        if not self.called:
            return "", [ToolCallDelta(index=0, id=new_call_id(), type="function",
                                      function=FunctionCallDelta(name=self.name, arguments=text))]
        return "", [ToolCallDelta(index=0, function=FunctionCallDelta(arguments=text))] if text else []


class RequiredCalls(ToolCalls):
    """``tool_choice: required``: a JSON array of calls, sent whole once it is complete (a cut-off
    array, at ``max_tokens``, is returned as content)."""

    def __init__(self) -> None:
        self.text = ""

    def feed(self, text: str, token_ids: list[int], finished: bool) -> tuple[str, list[ToolCallDelta]]:
        self.text += text
        if not finished:
            return "", []
        calls = _json_or_none(self.text)
        if not isinstance(calls, list) or not all(isinstance(c, dict) and "name" in c for c in calls):
            return self.text, []
        return "", [ToolCallDelta(index=i, id=new_call_id(), type="function", function=FunctionCallDelta(
            name=call["name"], arguments=json.dumps(call.get("parameters", {}), ensure_ascii=False)))
            for i, call in enumerate(calls)]


class AutoCalls(ToolCalls):
    """``tool_choice: auto``: vLLM's streaming tool parser over the model's text."""

    def __init__(self, parser_name: str, tokenizer: Any, tools: list[dict[str, Any]]) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChat
        from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

        self.request = VllmChat(model="maas", messages=[{"role": "user", "content": ""}],
                                tools=tools, tool_choice="auto")
        parser_cls = ToolParserManager.get_tool_parser(parser_name)
        try:
            self.parser = parser_cls(tokenizer, self.request.tools)
        except TypeError:  # parsers of the older signature take the tokenizer only
            self.parser = parser_cls(tokenizer)
        self.request = self.parser.adjust_request(self.request)
        self.text = ""
        self.token_ids: list[int] = []
        self.content = ""  # the content sent so far

    def feed(self, text: str, token_ids: list[int], finished: bool) -> tuple[str, list[ToolCallDelta]]:
        content, calls = self._parse(text, token_ids)
        self.content += content
        if finished and not self.called and not calls and self.text.startswith(self.content):
            content += self.text[len(self.content):]  # what the parser held back (a partial tag)
            self.content = self.text
        return content, calls

    def _parse(self, text: str, token_ids: list[int]) -> tuple[str, list[ToolCallDelta]]:
        previous_text, previous_ids = self.text, self.token_ids
        self.text, self.token_ids = previous_text + text, previous_ids + list(token_ids)
        if not text:
            return "", []
        try:
            delta = self.parser.extract_tool_calls_streaming(
                previous_text, self.text, text, previous_ids, self.token_ids, list(token_ids), self.request)
        except Exception:  # noqa: BLE001 - text the parser cannot read stays text
            logger.warning("The %s tool parser failed on a delta; it is returned as content.",
                           type(self.parser).__name__, exc_info=True)
            return text, []
        if delta is None:
            return "", []
        calls = [ToolCallDelta(index=call.index, id=call.id, type="function" if call.id else None,
                               function=FunctionCallDelta(name=call.function.name if call.function else None,
                                                          arguments=call.function.arguments if call.function else None))
                 for call in delta.tool_calls or []]
        return delta.content or "", calls


def check_tool_parser(name: str | None) -> None:
    """Fail at start, not on a request, when the configured parser is not one of vLLM's."""
    if name is not None:
        from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

        ToolParserManager.get_tool_parser(name)


def tool_calls_for(params: GenerationParams, tokenizer: Any = None) -> ToolCalls | None:
    """The output parser of one choice of a generation (None without tools)."""
    if params.tool_mode == "named":
        return NamedCalls(params.tool_name or "")
    if params.tool_mode == "required":
        return RequiredCalls()
    if params.tool_mode == "auto" and params.tool_parser:
        return AutoCalls(params.tool_parser, tokenizer, params.tools or [])
    return None


def merge_tool_calls(calls: list[ToolCallDelta], new: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Streamed tool-call deltas merged as a client does: by ``index``, arguments concatenated."""
    merged = [call.model_copy(deep=True) for call in calls]
    for delta in new:
        same = next((c for c in merged if c.index == delta.index), None)
        if same is None:
            merged.append(delta.model_copy(deep=True))
            continue
        same.id = same.id or delta.id
        same.type = same.type or delta.type
        same.function.name = same.function.name or delta.function.name
        same.function.arguments = (same.function.arguments or "") + (delta.function.arguments or "")
    return merged


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
