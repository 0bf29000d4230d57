"""The wire models of Anthropic's Messages API: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``, their answers, stream events and error body.

Written after Anthropic's API reference and vLLM's ``vllm/entrypoints/anthropic/protocol.py``, not
imported from vLLM: importing that module loads vLLM, torch and transformers (about 4,900 modules,
over 30 s of CPU here), which the ingress must not pay. Unlike vLLM's, these models are bounded like
the chat route's (messages, tools, stop sequences, names) and each content block is its own model,
so a malformed block is a 400 that names it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from maas.limits import MAX_TOOLS
from maas.protocol.base import MAX_MESSAGES, ModelName, RequestModel, UserId, WireModel, new_id
from maas.protocol.chat import MAX_STOP_SEQUENCES, Stop

ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
BlockId = Annotated[str, Field(min_length=1, max_length=256)]

# ----------------------------------------------------------------------------- request content


class TextBlock(RequestModel):
    """``{"type": "text", "text": ...}`` (``cache_control`` and ``citations`` are ignored)."""

    type: Literal["text"]
    text: str


class ToolUseBlock(RequestModel):
    """An assistant's earlier call of a tool: its id, the tool's name and the input it gave."""

    type: Literal["tool_use"]
    id: BlockId
    name: ToolName
    input: dict[str, Any] = Field(default_factory=dict, description="The tool's input, a JSON object.")


class UnsupportedBlock(RequestModel):
    """A block this service cannot take (images, documents, thinking, server tools): accepted by the
    schema so that the answer is a clear 400 naming it, not a validation error about its fields."""

    model_config = ConfigDict(extra="allow")

    type: Literal["image", "document", "search_result", "thinking", "redacted_thinking",
                  "server_tool_use", "web_search_tool_result", "container_upload"]


ResultPart = Annotated[TextBlock | UnsupportedBlock, Field(discriminator="type")]


class ToolResultBlock(RequestModel):
    """A user's answer to a ``tool_use``: the tool's output, as text or text blocks."""

    type: Literal["tool_result"]
    tool_use_id: BlockId
    content: str | list[ResultPart] | None = Field(None, description="The tool's output.")
    is_error: bool | None = Field(None, description="The tool failed; `content` says how.")


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock | UnsupportedBlock,
                         Field(discriminator="type")]


class InputMessage(RequestModel):
    """One turn of the conversation: a text, or content blocks."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock] = Field(..., description="A text, or content blocks.")


# ----------------------------------------------------------------------------- tools


class Tool(RequestModel):
    """A client tool: its name, what it does and the JSON schema of its input."""

    type: Literal["custom"] | None = Field(None, description="Client tools only (`custom`).")
    name: ToolName
    description: str | None = Field(None, max_length=8192)
    input_schema: dict[str, Any] = Field(..., description="JSON schema of the input, an object.")


class ToolChoiceAuto(RequestModel):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(RequestModel):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(RequestModel):
    type: Literal["tool"]
    name: ToolName
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(RequestModel):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone,
                       Field(discriminator="type")]


class Metadata(RequestModel):
    """Anthropic's ``metadata``: an end-user id, accepted and never stored or logged."""

    user_id: UserId | None = None


class Thinking(RequestModel):
    """``thinking``: only ``{"type": "disabled"}`` is served (the models here do not reason)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["enabled", "disabled", "adaptive"]


class OutputFormat(RequestModel):
    """``output_config.format``: the answer must be JSON valid against ``schema``."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(..., alias="schema", description="The JSON schema of the answer.")


class OutputConfig(RequestModel):
    """``output_config``: ``format`` is served (structured output); ``effort`` is accepted, not used."""

    format: OutputFormat | None = Field(None, description="JSON output of a schema.")


# ----------------------------------------------------------------------------- requests


class CountTokensRequest(RequestModel):
    """``POST /v1/messages/count_tokens``: the prompt of a Messages request, without sampling."""

    model: ModelName
    messages: list[InputMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = Field(None, description="The system prompt.")
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS, description="Tools the model may use.")
    tool_choice: ToolChoice | None = Field(None, description="`auto` (default), `any`, `tool`, `none`.")
    thinking: Thinking | None = Field(None, description="Only `disabled` is served.")


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(..., ge=1, description="Most tokens to generate (required).")
    stop_sequences: list[Stop] | None = Field(None, max_length=MAX_STOP_SEQUENCES,
                                              description="Up to 4 strings that end the answer.")
    temperature: float | None = Field(None, ge=0, le=1, description="0 is greedy; default 1.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=0, le=1000, description="Sample from the k likeliest; 0: all.")
    metadata: Metadata | None = Field(None, description="`user_id`: accepted, not used.")
    output_config: OutputConfig | None = Field(None, description="`format`: JSON output of a schema.")
    stream: bool = Field(False, description="Stream the answer as Anthropic's server-sent events.")


# ----------------------------------------------------------------------------- answers


class Usage(WireModel):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """What the request's API key is charged (:mod:`maas.edge.admission`)."""
        return self.input_tokens + self.output_tokens


class TextContent(WireModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(WireModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


OutputBlock = Annotated[TextContent | ToolUseContent, Field(discriminator="type")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def new_message_id() -> str:
    return new_id("msg").replace("-", "_", 1)


class MessageResponse(WireModel):
    """The answer of ``POST /v1/messages``."""

    id: str = Field(default_factory=new_message_id)
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputBlock] = Field(default_factory=list)
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage = Field(default_factory=Usage)


class CountTokensResponse(WireModel):
    """The answer of ``POST /v1/messages/count_tokens``."""

    input_tokens: int


# ----------------------------------------------------------------------------- stream events


class MessageStart(WireModel):
    type: Literal["message_start"] = "message_start"
    message: MessageResponse


class Ping(WireModel):
    type: Literal["ping"] = "ping"


class ContentBlockStart(WireModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: OutputBlock


class TextDelta(WireModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(WireModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDelta(WireModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: Annotated[TextDelta | InputJsonDelta, Field(discriminator="type")]


class ContentBlockStop(WireModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDeltaFields(WireModel):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class MessageDelta(WireModel):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDeltaFields
    usage: Usage


class MessageStop(WireModel):
    type: Literal["message_stop"] = "message_stop"


MessageEvent = (MessageStart | Ping | ContentBlockStart | ContentBlockDelta | ContentBlockStop
                | MessageDelta | MessageStop)


# ----------------------------------------------------------------------------- errors


class ErrorDetail(WireModel):
    type: str = Field(description="`invalid_request_error`, `authentication_error`, `permission_error`, "
                      "`not_found_error`, `request_too_large`, `rate_limit_error`, `api_error`, "
                      "`timeout_error` or `overloaded_error`.")
    message: str


class AnthropicErrorResponse(WireModel):
    """Anthropic's error body, as the Messages routes answer every error."""

    type: Literal["error"] = "error"
    error: ErrorDetail
