"""/v1/score and /v1/rerank: request shapes, pairing, and ranking by cosine (no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from maas.endpoints.encoding.scoring import cosine, distinct, rerank_response, score_pairs, score_response
from maas.endpoints.encoding.scoring_protocol import RerankRequest, ScoreRequest
from maas.protocol.errors import InvalidRequestError

VECTORS = {"q": [1.0, 0.0], "near": [0.8, 0.6], "far": [0.0, 1.0], "opposite": [-1.0, 0.0]}


def embedded(texts: list[str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(vector=VECTORS[t], num_tokens=2) for t in texts]


def test_one_text_is_scored_against_each_and_lists_pairwise() -> None:
    assert score_pairs(ScoreRequest(model="e", text_1="q", text_2=["near", "far"])) == [
        ("q", "near"), ("q", "far")]
    assert score_pairs(ScoreRequest(model="e", queries=["q", "far"], documents=["near", "far"])) == [
        ("q", "near"), ("far", "far")]
    with pytest.raises(InvalidRequestError, match="same length") as error:
        score_pairs(ScoreRequest(model="e", text_1=["q", "far"], text_2=["near", "far", "q"]))
    assert error.value.param == "text_1"


def test_score_requests_name_each_side_once() -> None:
    for sides in ({"text_1": "a"}, {"text_1": "a", "queries": "b", "text_2": "c"}, {"text_2": "c"}):
        with pytest.raises(ValidationError):
            ScoreRequest(model="e", **sides)
    with pytest.raises(ValidationError):
        ScoreRequest(model="e", text_1="a", text_2=[])


def test_scores_are_cosines_of_the_embeddings() -> None:
    request = ScoreRequest(model="e", text_1="q", text_2=["near", "far", "q"])
    pairs = score_pairs(request)
    texts = distinct([t for pair in pairs for t in pair])
    assert texts == ["q", "near", "far"]
    response = score_response(request, pairs, texts, embedded(texts))
    assert [round(d.score, 6) for d in response.data] == [0.8, 0.0, 1.0]
    assert response.usage.prompt_tokens == 6 and response.object == "list"
    assert cosine([2.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0) and cosine([0.0], [0.0]) == 0.0


def test_rerank_orders_documents_by_cosine_and_keeps_top_n() -> None:
    request = RerankRequest(model="e", query="q", documents=["far", {"text": "near"}, "opposite"], top_n=2)
    texts = distinct([request.query, *request.texts()])
    response = rerank_response(request, texts, embedded(texts))
    assert [(r.index, r.document.text) for r in response.results] == [(1, "near"), (0, "far")]
    assert response.results[0].relevance_score == pytest.approx(0.8)
    bare = RerankRequest(model="e", query="q", documents=["far", "near"], return_documents=False)
    assert [r.document for r in rerank_response(bare, texts, embedded(texts)).results] == [None, None]
    with pytest.raises(ValidationError):
        RerankRequest(model="e", query="q", documents=[{"title": "no text"}])
