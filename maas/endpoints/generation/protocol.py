"""The generation family's protocol: ``/v1/responses`` and ``/v1/completions``. The chat request
and its answers are in :mod:`maas.protocol.chat`, shared with the other families and the engines.

``/v1/responses`` is OpenAI's Responses API over the chat path (text in, text or function calls
out). Responses are stored unless ``store`` is false (``maas/endpoints/responses/``), and a
request may continue one by ``previous_response_id`` or run in the ``background``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from maas.limits import MAX_TOOLS
from maas.protocol.base import (
    MAX_MESSAGES,
    Metadata,
    ModelName,
    NonEmptyInput,
    RequestModel,
    UsageInfo,
    UserId,
    WireModel,
    new_id,
    now,
)
from maas.protocol.chat import FinishReason, PromptLogprobs, ResponseFormat, SamplingFields

Role = Literal["system", "developer", "user", "assistant"]


class InputContentPart(RequestModel):
    """A part of an input message: text (``input_text``, or ``output_text`` in past answers)."""

    type: str
    text: str | None = None
    annotations: list[Any] | None = None


class InputMessage(RequestModel):
    """One message of ``input`` (``type: "message"`` may be left out). ``id`` and ``status`` are
    those of an earlier output message sent back as input."""

    type: Literal["message"] = "message"
    role: Role
    content: str | list[InputContentPart]
    id: str | None = Field(None, max_length=128)
    status: str | None = None


class FunctionCallInput(RequestModel):
    """An earlier ``function_call`` output item, sent back as input."""

    type: Literal["function_call"]
    call_id: str = Field(..., min_length=1, max_length=256)
    name: str = Field(..., min_length=1, max_length=64)
    arguments: str = Field("{}", description="The arguments, a JSON object as text.")
    id: str | None = Field(None, max_length=128)
    status: str | None = None


class FunctionCallOutputInput(RequestModel):
    """The result of a function call: ``output`` answers the call ``call_id``."""

    type: Literal["function_call_output"]
    call_id: str = Field(..., min_length=1, max_length=256)
    output: str
    id: str | None = Field(None, max_length=128)
    status: str | None = None


InputItem = InputMessage | FunctionCallInput | FunctionCallOutputInput


class FunctionTool(RequestModel):
    """A function the model may call, in the Responses shape (flat, no ``function`` object)."""

    type: str = Field("function", description="`function` (other tool types are a 400).")
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments.")
    strict: bool | None = None


class NamedFunctionChoice(RequestModel):
    """``tool_choice`` naming one function: ``{"type": "function", "name": ...}``."""

    type: Literal["function"] = "function"
    name: str = Field(..., min_length=1, max_length=64)


class TextFormat(RequestModel):
    """``text.format``: plain text, any JSON object, or JSON of a schema (flat, as OpenAI's)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, max_length=64)
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    def response_format(self) -> ResponseFormat | None:
        """The chat ``response_format`` of the same meaning."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return ResponseFormat(type="json_object")
        return ResponseFormat.model_validate({"type": "json_schema", "json_schema": {
            "name": self.name or "output", "schema": self.json_schema or {}, "strict": self.strict}})


class TextConfig(RequestModel):
    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(RequestModel):
    """``POST /v1/responses``."""

    model: ModelName
    input: Annotated[str | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)], NonEmptyInput] = Field(
        ..., description=f"A text, or up to {MAX_MESSAGES} items ({MAX_MESSAGES - 1} with `instructions`): "
        "messages, earlier `function_call` items and `function_call_output` items.")
    instructions: str | None = Field(None, description="A system message put first.")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    text: TextConfig | None = None
    store: bool | None = Field(None, description="Store the response (retrieve it, continue it by "
                               "`previous_response_id`); default `ingress.store_responses` (true).")
    metadata: Metadata | None = None
    user: UserId | None = None
    previous_response_id: str | None = Field(
        None, max_length=128, description="A stored response of this API key whose input and output "
        "come before `input` (its `instructions` do not).")
    background: bool | None = Field(None, description="Answer at once with the response `queued`; it "
                                    "runs apart from the request (poll `GET /v1/responses/{id}`). Needs `store`.")
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS, description="Functions the "
                                             "model may call (type `function`).")
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = Field(
        None, description="`none`, `auto` (default with tools), `required`, or `{\"type\": \"function\", "
        "\"name\"}`.")
    parallel_tool_calls: bool | None = Field(None, description="`false`: at most one call.")


class OutputText(WireModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)


class OutputMessage(WireModel):
    type: Literal["message"] = "message"
    id: str = Field(default_factory=lambda: new_id("msg"))
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)


class InputTokensDetails(WireModel):
    cached_tokens: int = 0


class OutputTokensDetails(WireModel):
    reasoning_tokens: int = 0


class ResponseUsage(WireModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class FunctionCallItem(WireModel):
    """An output item: the model calls a function (answer it with a ``function_call_output``)."""

    type: Literal["function_call"] = "function_call"
    id: str = Field(default_factory=lambda: new_id("fc"))
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


OutputItem = OutputMessage | FunctionCallItem


class IncompleteDetails(WireModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(WireModel):
    """A response, as ``client.responses.create`` returns it."""

    id: str = Field(default_factory=lambda: new_id("resp"))
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=now)
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"] = "completed"
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    metadata: dict[str, str] = Field(default_factory=dict)
    incomplete_details: IncompleteDetails | None = None
    error: dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    previous_response_id: str | None = None
    store: bool = False
    background: bool = False
    truncation: Literal["disabled"] = "disabled"


class ResponseEvent(WireModel):
    """A server-sent event of a streamed response; ``type`` names it."""

    type: str
    sequence_number: int = 0
    response: ResponseObject | None = None
    output_index: int | None = None
    content_index: int | None = None
    item_id: str | None = None
    item: OutputItem | None = None
    part: OutputText | None = None
    delta: str | None = None
    text: str | None = None
    arguments: str | None = None

    @property
    def usage(self) -> ResponseUsage | None:
        """The usage of the response this event completes (what the API key is charged)."""
        return self.response.usage if self.response is not None else None

# ----------------------------------------------------------------------------- completions


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``."""

    model: ModelName
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="Text, texts, token ids, or lists of token ids."
    )
    logprobs: int | None = Field(None, ge=0, le=20, description="Top log probabilities per token.")
    echo: bool = Field(False, description="Put the prompt before the answer; with `logprobs`, the "
                       "prompt's tokens and log probabilities too (the first token's is null).")
    prompt_logprobs: int | None = Field(
        None, ge=0, le=20, description="vLLM: log probabilities of the prompt's tokens, with this many "
        "alternatives, in each choice's `prompt_logprobs`."
    )
    suffix: str | None = Field(None, description="Not supported; must be empty.")

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        if isinstance(value, list) and len(value) > 64 and isinstance(value[0], (str, list)):
            raise ValueError("at most 64 prompts per request")
        return value


class CompletionLogprobs(WireModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)

class CompletionChoice(WireModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason = None
    prompt_logprobs: PromptLogprobs | None = None


class CompletionResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


