"""``/v1/score`` and ``/v1/rerank``: which texts to embed, and scores as cosine similarities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maas.endpoints.encoding.scoring_protocol import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
)
from maas.protocol.base import UsageInfo
from maas.protocol.errors import InvalidRequestError


def score_pairs(request: ScoreRequest) -> list[tuple[str, str]]:
    """The pairs to score: one first text against each second text, or two lists pairwise."""
    first, second = request.sides()
    if len(first) == 1:
        return [(first[0], text) for text in second]
    if len(first) != len(second):
        param = "text_1" if request.text_1 is not None else "queries"
        raise InvalidRequestError(
            f"{param} has {len(first)} texts and the other side {len(second)}: give one text, "
            "or lists of the same length.", param)
    return list(zip(first, second, strict=True))


def distinct(texts: Sequence[str]) -> list[str]:
    """The texts without repeats, in first-seen order: each is embedded once."""
    return list(dict.fromkeys(texts))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (the encoders' embeddings have unit length; normalized here anyway)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norm if norm else 0.0


def score_response(request: ScoreRequest, pairs: list[tuple[str, str]], texts: list[str],
                   vectors: Sequence[Any]) -> ScoreResponse:
    """Each pair's score from the embeddings of ``texts`` (each with ``vector``, ``num_tokens``)."""
    by_text = dict(zip(texts, vectors, strict=True))
    data = [ScoreData(index=i, score=cosine(by_text[a].vector, by_text[b].vector))
            for i, (a, b) in enumerate(pairs)]
    return ScoreResponse(model=request.model, data=data,
                         usage=UsageInfo.of(sum(v.num_tokens for v in vectors)))


def rerank_response(request: RerankRequest, texts: list[str], vectors: Sequence[Any]) -> RerankResponse:
    """The documents by their cosine to the query, best first, the best ``top_n`` kept."""
    by_text = dict(zip(texts, vectors, strict=True))
    query = by_text[request.query].vector
    documents = request.texts()
    results = [RerankResult(index=i, relevance_score=cosine(query, by_text[text].vector),
                            document=RerankDocument(text=text) if request.return_documents else None)
               for i, text in enumerate(documents)]
    results.sort(key=lambda r: (-r.relevance_score, r.index))
    if request.top_n:
        results = results[: request.top_n]
    tokens = sum(v.num_tokens for v in vectors)
    return RerankResponse(model=request.model, results=results,
                          usage=RerankUsage(prompt_tokens=tokens, total_tokens=tokens))
