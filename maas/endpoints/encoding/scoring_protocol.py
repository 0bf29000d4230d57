"""``/v1/score`` and ``/v1/rerank`` (vLLM's shapes; rerank also as Cohere's and Jina's ``/v2/rerank``).

Both compare texts by the cosine of an encoder's embeddings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from maas.config import MAX_INPUTS_PER_REQUEST
from maas.protocol.base import ModelName, RequestModel, UsageInfo, WireModel, new_id, now

MAX_SCORED_TEXTS = MAX_INPUTS_PER_REQUEST // 2
"""The most texts on either side of one score request: two lists of it pairwise are as many texts
as one request may send to the encoder (:data:`maas.config.MAX_INPUTS_PER_REQUEST`)."""
MAX_RERANKED_DOCUMENTS = MAX_INPUTS_PER_REQUEST - 1
"""The most documents of one rerank request: with the query, as many texts as the encoder takes."""

Text = Annotated[str, Field(max_length=100_000)]
Texts = Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_SCORED_TEXTS)]


class ScoreRequest(RequestModel):
    """``POST /v1/score``: one text against each of a list, or two lists pairwise.

    The sides are named ``text_1``/``text_2`` (vLLM's first names) or ``queries``/``documents``.
    """

    model: ModelName
    text_1: Texts | None = Field(None, description="One text, or a list paired with `text_2`.")
    text_2: Texts | None = Field(None, description="One text or a list.")
    queries: Texts | None = Field(None, description="Another name for `text_1`.")
    documents: Texts | None = Field(None, description="Another name for `text_2`.")

    @model_validator(mode="after")
    def _both_sides(self) -> ScoreRequest:
        if (self.text_1 is None) == (self.queries is None):
            raise ValueError("give exactly one of text_1 and queries")
        if (self.text_2 is None) == (self.documents is None):
            raise ValueError("give exactly one of text_2 and documents")
        return self

    def sides(self) -> tuple[list[str], list[str]]:
        """The two sides as lists of texts."""
        first = self.text_1 if self.text_1 is not None else self.queries
        second = self.text_2 if self.text_2 is not None else self.documents
        return _listed(first), _listed(second)


class ScoreData(WireModel):
    index: int
    object: Literal["score"] = "score"
    score: float = Field(description="Cosine similarity of the two texts' embeddings, in [-1, 1].")


class ScoreResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("score"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[ScoreData]
    usage: UsageInfo


class RerankRequest(RequestModel):
    """``POST /v1/rerank`` (vLLM), ``/v2/rerank`` (Cohere, Jina): documents ranked by a query."""

    model: ModelName
    query: Text
    documents: list[Text | dict[str, Any]] = Field(..., min_length=1, max_length=MAX_RERANKED_DOCUMENTS,
                                                   description="Texts, or objects with `text`.")
    top_n: int | None = Field(None, ge=0, description="Keep the best n (0 or absent: all).")
    return_documents: bool = Field(True, description="Include each document's text (Cohere).")

    @field_validator("documents")
    @classmethod
    def _texts(cls, documents: list[Any]) -> list[Any]:
        for i, document in enumerate(documents):
            if isinstance(document, dict) and not isinstance(document.get("text"), str):
                raise ValueError(f"documents[{i}] must be a text or an object with a `text` string")
        return documents

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d["text"] for d in self.documents]


class RerankDocument(WireModel):
    text: str


class RerankResult(WireModel):
    index: int = Field(description="The document's position in the request.")
    document: RerankDocument | None = None
    relevance_score: float = Field(description="Cosine similarity to the query, in [-1, 1].")


class RerankUsage(WireModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("rerank"))
    model: str
    usage: RerankUsage
    results: list[RerankResult] = Field(description="Best first.")


def _listed(texts: str | list[str] | None) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts or [])
