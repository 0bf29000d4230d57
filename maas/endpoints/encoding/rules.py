"""``/v1/embeddings`` and ``/v1/classify``: inputs and the shapes of their answers."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

from maas.endpoints.encoding.protocol import (
    ClassificationData,
    ClassifyResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
)
from maas.protocol.base import UsageInfo
from maas.protocol.errors import InvalidRequestError


def embedding_texts(request: EmbeddingRequest) -> list[str]:
    """The texts to embed; token-id input is refused (the encoders take text)."""
    if isinstance(request.input, str):
        return [request.input]
    if not all(isinstance(item, str) for item in request.input):
        raise InvalidRequestError("Embeddings take text input, not token ids.", "input")
    return list(request.input)  # type: ignore[arg-type]


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """An embedding as floats or as base64 of little-endian float32 (the openai client's default)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embedding_response(request: EmbeddingRequest, vectors: Sequence[Any]) -> EmbeddingResponse:
    """The answer to ``request`` from the encoder's vectors (each with ``vector``, ``num_tokens``)."""
    if request.dimensions is not None and vectors and request.dimensions != len(vectors[0].vector):
        raise InvalidRequestError("dimensions cannot be changed for this model.", "dimensions")
    data = [EmbeddingData(index=i, embedding=encode_embedding(v.vector, request.encoding_format))
            for i, v in enumerate(vectors)]
    return EmbeddingResponse(data=data, model=request.model,
                             usage=UsageInfo.of(sum(v.num_tokens for v in vectors)))


def classify_response(model_id: str, results: Sequence[Any]) -> ClassifyResponse:
    """The answer of a classification from the classifier's results, one per text."""
    data = [ClassificationData(index=i, label=r.label, probs=r.probs, labels=r.labels,
                               num_classes=len(r.probs)) for i, r in enumerate(results)]
    return ClassifyResponse(model=model_id, data=data,
                            usage=UsageInfo.of(sum(r.num_tokens for r in results)))
