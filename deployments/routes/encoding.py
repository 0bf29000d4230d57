"""``/v1/embeddings``, ``/v1/classify``, ``/v1/tokenize`` and ``/v1/detokenize``."""

from __future__ import annotations

from fastapi import Request

from deployments.routes.common import ingress_of, new_router
from maas.wire.admission import admitted
from maas.wire.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    TokenizeRequest,
    TokenizeResponse,
)

router = new_router()


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
@admitted
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    return await ingress_of(request).embeddings(body)


@router.post("/v1/classify", response_model=ClassifyResponse)
@admitted
async def classify(body: ClassifyRequest, request: Request) -> ClassifyResponse:
    return await ingress_of(request).classify(body)


@router.post("/v1/tokenize", response_model=TokenizeResponse)
@admitted
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    return await ingress_of(request).tokenize(body)


@router.post("/v1/detokenize", response_model=DetokenizeResponse)
@admitted
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    return await ingress_of(request).detokenize(body)
