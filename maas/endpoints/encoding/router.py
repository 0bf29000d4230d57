"""``/v1/embeddings``, ``/v1/score``, ``/v1/rerank``, ``/v1/classify``, ``/v1/tokenize`` and
``/v1/detokenize``."""

from __future__ import annotations

from fastapi import Request

from maas.edge.admission import admitted
from maas.endpoints.common import ingress_of, new_router, owner_of
from maas.endpoints.encoding.protocol import (
    ClassifyRequest,
    ClassifyResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from maas.endpoints.encoding.scoring_protocol import (
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)

router = new_router()


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
@admitted
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    return await ingress_of(request).embeddings(body)


@router.post("/v1/score", response_model=ScoreResponse)
@admitted
async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
    """Cosine similarity of the embeddings of text pairs (vLLM's shape).

    `text_1` (or `queries`) is one text scored against each text of `text_2` (or `documents`),
    or a list scored pairwise with a list of the same length. `model` is an embedding model.
    """
    return await ingress_of(request).score(body)


@router.post("/v1/rerank", response_model=RerankResponse)
@router.post("/v2/rerank", response_model=RerankResponse)
@admitted
async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
    """`documents` ordered by the cosine of their embedding to `query`'s, best first.

    vLLM's shape at `/v1/rerank`, Cohere's and Jina's at `/v2/rerank` (the same request and
    answer); `top_n` keeps the best n, `return_documents: false` leaves out their text.
    """
    return await ingress_of(request).rerank(body)


@router.post("/v1/classify", response_model=ClassifyResponse)
@admitted
async def classify(body: ClassifyRequest, request: Request) -> ClassifyResponse:
    """Every label's probability for each text. The answer's `id` can be named by `POST /v1/feedback`
    (with the correct label) for `ingress.feedback_retention_s` seconds, by the same API key."""
    return await ingress_of(request).classify(body, owner_of(request), remember=True)


@router.post("/v1/tokenize", response_model=TokenizeResponse)
@admitted
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    return await ingress_of(request).tokenize(body)


@router.post("/v1/detokenize", response_model=DetokenizeResponse)
@admitted
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    return await ingress_of(request).detokenize(body)
