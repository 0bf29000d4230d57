"""The chat protocol, shared by every family that generates (chat, completions, responses, the
tasks, the Batch API, tokenize) and by the engines: sampling fields, messages, tools, the chat
request and its answers, and the internal messages between deployments
(:class:`GenerationParams`, :class:`GenerationChunk`, :class:`GenerationResult`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from maas.limits import MAX_TOOLS
from maas.protocol.base import (
    MAX_MESSAGES,
    MAX_SEED,
    ModelName,
    RequestModel,
    UsageInfo,
    UserId,
    WireModel,
    new_id,
    now,
)

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 256

Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]


class SamplingFields(RequestModel):
    """Sampling parameters shared by chat and completions, each bounded."""

    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=-1, le=1000, description="vLLM top-k; -1 or 0 disables.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    stop: Stop | list[Stop] | None = Field(None, description="Up to 4 stop strings.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Sampling seed.")
    n: int = Field(1, ge=1, le=8, description="Choices to generate per prompt.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty on present tokens.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty by token frequency.")
    repetition_penalty: float = Field(1.0, gt=0, le=2, description="vLLM: > 1 discourages repeats.")
    min_tokens: int = Field(0, ge=0, description="vLLM: tokens to generate before EOS or a stop.")
    ignore_eos: bool = Field(False, description="vLLM: keep generating past EOS (benchmarks).")
    stream: bool = Field(False, description="Stream the answer as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    user: UserId | None = Field(None, description="End-user id (accepted, not used).")

    @field_validator("stop")
    @classmethod
    def _bound_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        return value

    def stop_list(self) -> list[str]:
        """The stop strings as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def generation_params(self, max_tokens: int, logprobs: int | None) -> GenerationParams:
        """The engine parameters of this request, once ``max_tokens`` is known."""
        return GenerationParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k if self.top_k not in (None, 0) else -1,
            max_tokens=max_tokens,
            stop=self.stop_list(),
            seed=self.seed,
            n=self.n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            min_tokens=min(self.min_tokens, max_tokens),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
        )


class StreamOptions(RequestModel):
    """OpenAI ``stream_options``."""

    include_usage: bool = Field(False, description="Send a final chunk with usage only.")


# ----------------------------------------------------------------------------- chat


class TextPart(RequestModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class MediaPart(RequestModel):
    """A non-text part (image, audio, file): accepted by the schema so that the answer is a clear
    400 (the served models take text only), not a validation error about strings."""

    model_config = ConfigDict(extra="allow")

    type: Literal["image_url", "input_audio", "file", "audio_url", "video_url"]


class FunctionCallFields(RequestModel):
    """A called function: its name and its arguments as a JSON text."""

    name: str = Field(..., min_length=1, max_length=64)
    arguments: str = Field("{}", description="The arguments, a JSON object as text.")


class MessageToolCall(RequestModel):
    """A tool call of an earlier assistant message."""

    id: str = Field(..., min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallFields


class ChatMessage(RequestModel):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | MediaPart] | None = Field(None, description="Text, or text parts.")
    name: str | None = Field(None, max_length=64)
    tool_calls: list[MessageToolCall] | None = Field(
        None, max_length=128, description="Assistant messages: the tools it called."
    )
    tool_call_id: str | None = Field(
        None, max_length=256, description="Tool messages: the call this message answers."
    )

    def text(self) -> str:
        """The message's text content."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template expects it (tool calls with their arguments parsed)."""
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [call_for_template(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None and role == "tool":
            message["name"] = self.name
        return message


def call_for_template(call: MessageToolCall) -> dict[str, Any]:
    """A tool call as Hugging Face chat templates take it: ``arguments`` a dict when it parses."""
    import json

    try:
        arguments: Any = json.loads(call.function.arguments)
    except ValueError:
        arguments = call.function.arguments
    return {"id": call.id, "type": "function",
            "function": {"name": call.function.name, "arguments": arguments}}


class FunctionDefinition(RequestModel):
    """A function the model may call: its name, description and JSON schema of its arguments."""

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments.")
    strict: bool | None = None


class ChatTool(RequestModel):
    """OpenAI ``tools[i]``: a function tool."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(RequestModel):
    name: str = Field(..., min_length=1, max_length=64)


class NamedToolChoice(RequestModel):
    """OpenAI ``tool_choice`` naming one function: the model must call it."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(RequestModel):
    """OpenAI ``response_format.json_schema``: the answer must be JSON valid against ``schema``."""

    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestModel):
    """OpenAI ``response_format``: free text, any JSON object, or JSON of a given schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        return self


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    model: ModelName
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, description="Alias of max_tokens.")
    logprobs: bool = Field(False, description="Return log probabilities of output tokens.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token.")
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = Field(None, max_length=MAX_TOOLS, description="Functions the model may call.")
    tool_choice: ToolChoice | None = Field(
        None, description="`none`, `auto` (default with tools), `required`, or a named function."
    )
    parallel_tool_calls: bool | None = Field(None, description="`false`: at most one call (`required`).")

    @model_validator(mode="after")
    def _check_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` or, failing that, ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def requested_logprobs(self) -> int | None:
        """How many top log probabilities per token (None: no logprobs)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class FunctionCall(WireModel):
    name: str
    arguments: str = Field(description="The arguments, a JSON object as text.")


class ToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallDelta(WireModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(WireModel):
    """A streamed part of a tool call: the first has ``id`` and the name; ``arguments`` fragments
    of the same ``index`` concatenate to the JSON arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChatDelta(WireModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ResponseMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(WireModel):
    """Log probability of one output token, with its alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(WireModel):
    content: list[TokenLogprob] = Field(default_factory=list)


FinishReason = Literal["stop", "length", "abort", "tool_calls"] | None
StopReason = str | None
"""vLLM's ``stop_reason``: the stop string that ended a choice (None: end of sequence or length)."""


class ChatChoice(WireModel):
    index: int
    message: ResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason = None
    stop_reason: StopReason = Field(None, description="vLLM: the stop string that ended the choice.")


class ChatCompletionResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class ChatChunkChoice(WireModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason = None
    stop_reason: StopReason = Field(None, description="vLLM: the stop string that ended the choice.")


class ChatCompletionChunk(WireModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


class PromptLogprob(WireModel):
    """vLLM's shape of one candidate of a prompt position."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


PromptLogprobs = list[dict[str, PromptLogprob] | None]
"""Per prompt token: its candidates by token id (the first position is null), as vLLM gives them."""


# ----------------------------------------------------------------------------- internal


class GenerationParams(WireModel):
    """Sampling parameters as the generator deployment receives them (already validated)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int | None = Field(None, description="Top-k alternatives; None: no logprobs.")
    json_schema: str | None = Field(None, description="Constrain the output to JSON of this schema.")
    json_object: bool = Field(False, description="Constrain the output to a JSON object.")
    prompt_logprobs: int | None = Field(None, description="Alternatives per prompt token; None: none.")
    echo: bool = Field(False, description="Return the decoded prompt and its tokens' texts.")
    tool_mode: Literal["auto", "named", "required"] | None = Field(
        None, description="How the output becomes tool calls (see maas/generation_rules/tools.py)."
    )
    tool_name: str | None = Field(None, description="The function of a named tool choice.")
    tools: list[dict[str, Any]] | None = Field(None, description="The tools, for the `auto` parser.")
    tool_parser: str | None = Field(None, description="vLLM's tool parser of `auto`, e.g. `hermes`.")


class GenerationChunk(WireModel):
    """New output of one choice since the previous chunk."""

    index: int
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason = None
    stop_reason: StopReason = Field(None, description="The stop string that ended the choice.")
    tool_calls: list[ToolCallDelta] | None = None


class GenerationResult(WireModel):
    """One message from the generator: chunks of any choices plus running counts."""

    chunks: list[GenerationChunk]
    prompt_tokens: int
    completion_tokens: int
    prompt_token_ids: list[int] | None = Field(None, description="With prompt_logprobs only.")
    prompt_logprobs: PromptLogprobs | None = None
    prompt_text: str | None = Field(None, description="The decoded prompt (echo).")
    prompt_token_strs: list[str] | None = Field(None, description="Each prompt token's text (echo).")


SamplingFields.model_rebuild()
