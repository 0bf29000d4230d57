"""The base of the wire schemas, shared by every endpoint family: the request and response base
models, bounded client strings, object ids and times, usage, and the non-empty ``input`` rule.

The same models are the arguments and results of the application's handle methods, so a Ray
job and an HTTP client speak the same language.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from maas.config import MAX_INPUTS_PER_REQUEST

MAX_SEED = 2**63 - 1024
"""The largest int64 a JSON schema states exactly (as a double): clients that read the schema's
maximum as a number never send a seed the service refuses."""
MAX_MESSAGES = 1000
"""The most messages of one chat (or Responses) request."""
MAX_NAME_LENGTH = 256
"""The longest model name, ``user`` or other client identifier a request may send: client strings
are bounded before anything looks them up, counts them or keeps them."""

ModelName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
"""A model's id, as ``/v1/models`` lists it (or a pinned version, ``sentiment/v2``)."""
UserId = Annotated[str, Field(max_length=MAX_NAME_LENGTH)]
"""OpenAI's ``user``: an end-user id, accepted and never stored or logged."""
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16, description="Up to 16 pairs: keys up to 64 characters, values up to 512."),
]
"""OpenAI's ``metadata`` limits."""
Texts = Annotated[list[str], Field(max_length=MAX_INPUTS_PER_REQUEST)]
"""A list of texts for an encoder, classifier or NER model: at most what one request may send."""


def new_id(prefix: str) -> str:
    """A fresh OpenAI-style object id such as ``chatcmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """Seconds since the epoch, as OpenAI's ``created``."""
    return int(time.time())


class RequestModel(BaseModel):
    """Base of client requests: unknown fields are ignored, like OpenAI's server does.

    Numbers must be finite (JSON's non-standard ``NaN``/``Infinity`` and overflowing literals
    such as ``1e999`` are refused), and text must be valid Unicode: JSON can spell an unpaired
    surrogate (``"\\ud800"``), which no tokenizer can encode.
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        check_unicode(data)
        return data


def check_unicode(value: Any, depth: int = 0) -> None:
    """Raise ``ValueError`` if a string anywhere in ``value`` holds an unpaired surrogate."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text contains an unpaired UTF-16 surrogate (not valid Unicode)") from None
    elif depth < 32 and isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key, depth + 1)
            check_unicode(item, depth + 1)
    elif depth < 32 and isinstance(value, list):
        for item in value:
            check_unicode(item, depth + 1)


class WireModel(BaseModel):
    """Base of responses and internal messages."""

    model_config = ConfigDict(protected_namespaces=())


# ----------------------------------------------------------------------------- sampling


class UsageInfo(WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int = 0) -> UsageInfo:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )



_Input = TypeVar("_Input")


def _non_empty_input(value: _Input) -> _Input:
    if isinstance(value, list) and not value:
        raise ValueError("input must not be an empty list")
    return value


NonEmptyInput = AfterValidator(_non_empty_input)
"""The ``input`` of a request (``Annotated[str | Texts, NonEmptyInput]``): a list of inputs must not
be empty."""
