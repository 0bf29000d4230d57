"""The encoding family's protocol: embeddings, classify, tokenize and detokenize (vLLM's shapes
for the last three). Score and rerank are in :mod:`maas.endpoints.encoding.scoring_protocol`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from maas.config import MAX_INPUTS_PER_REQUEST
from maas.protocol.base import (
    MAX_MESSAGES,
    ModelName,
    NonEmptyInput,
    RequestModel,
    Texts,
    UsageInfo,
    UserId,
    WireModel,
    new_id,
    now,
)
from maas.protocol.chat import ChatMessage

# ----------------------------------------------------------------------------- embeddings


class EmbeddingRequest(RequestModel):
    """``POST /v1/embeddings``."""

    model: ModelName
    input: Annotated[
        str | Texts | list[int] | Annotated[list[list[int]], Field(max_length=MAX_INPUTS_PER_REQUEST)],
        NonEmptyInput,
    ] = Field(
        ..., description=f"A text, texts, token ids or lists of them (at most {MAX_INPUTS_PER_REQUEST} inputs).")
    encoding_format: Literal["float", "base64"] = Field("float")
    dimensions: int | None = Field(None, description="Not supported; must be empty.")
    user: UserId | None = None


class EmbeddingData(WireModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(WireModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: UsageInfo


# ----------------------------------------------------------------------------- classify


class ClassifyRequest(RequestModel):
    """``POST /v1/classify`` (vLLM's shape)."""

    model: ModelName
    input: Annotated[str | Texts, NonEmptyInput] = Field(
        ..., description=f"One text or a list of up to {MAX_INPUTS_PER_REQUEST}.")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ClassificationData(WireModel):
    index: int
    object: Literal["classification"] = "classification"
    label: str
    probs: list[float] = Field(description="Probability of each label, in `labels` order.")
    labels: list[str] = Field(description="The label names, in the order of `probs`.")
    num_classes: int


class ClassifyResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("classify"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[ClassificationData]
    usage: UsageInfo


# ----------------------------------------------------------------------------- tokenize


class TokenizeRequest(RequestModel):
    """``POST /v1/tokenize`` (vLLM's shape): a prompt, or chat messages."""

    model: ModelName
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    add_special_tokens: bool | None = Field(
        None, description="Default: true for a prompt, false for messages."
    )
    add_generation_prompt: bool = Field(True, description="Messages: open the assistant turn.")
    return_token_strs: bool = Field(False, description="Also return each token's string.")

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def special_tokens(self) -> bool:
        if self.add_special_tokens is not None:
            return self.add_special_tokens
        return self.messages is None


class TokenizeResponse(WireModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(RequestModel):
    """``POST /v1/detokenize`` (vLLM's shape)."""

    model: ModelName
    tokens: list[Annotated[int, Field(ge=0)]] = Field(..., max_length=1_000_000)


class DetokenizeResponse(WireModel):
    prompt: str


