"""One tenant cannot hurt another, over real HTTP: what a client sends never grows the metrics or
reaches the logs, and every limit is a 400 that names it (no 500, no engine refusal the schema
does not announce). Each test takes seconds on the session's service."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from maas.config import MAX_INPUTS_PER_REQUEST
from maas.endpoints.encoding.scoring_protocol import MAX_RERANKED_DOCUMENTS, MAX_SCORED_TEXTS
from maas.protocol.base import MAX_MESSAGES
from tests.conftest import ENCODER, GENERATOR, settled_metrics
from tests.integration.test_logging import LOG_WAIT_S, logs_containing

pytestmark = pytest.mark.integration


def embeddings_series(text: str) -> set[str]:
    """The label sets of /v1/embeddings requests and of unknown models in a /metrics text."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines()
            if not line.startswith("#") and ('route="/v1/embeddings"' in line or 'model="unknown"' in line)}


def test_unknown_and_huge_model_names_do_not_grow_the_metrics(service: str, client: httpx.Client) -> None:
    def send(i: int) -> None:
        unknown = client.post("/v1/embeddings", json={"model": f"nope-{uuid.uuid4().hex}-{i}", "input": "x"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        huge = client.post("/v1/embeddings", json={"model": f"{i}" + "m" * 100_000, "input": "x"})
        assert huge.status_code == 400 and huge.json()["error"]["param"] == "model", huge.text
        assert len(huge.content) < 2_000  # the answer does not echo the 100 kB name

    assert client.post("/v1/embeddings", json={"model": ENCODER, "input": "x"}).status_code == 200
    send(0)
    before = settled_metrics(service)
    for i in range(1, 21):
        send(i)
    after = settled_metrics(service)
    assert "nope-" not in after and "mmmm" not in after
    assert embeddings_series(after) == embeddings_series(before)  # counts grew, label sets did not
    assert len(after) < len(before) + 1_000


def test_limits_are_400s_that_name_them(client: httpx.Client) -> None:
    marker = f"client-text-{uuid.uuid4().hex}"
    request_id = f"test-{uuid.uuid4().hex}"
    message = {"role": "user", "content": marker}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/responses", {"model": GENERATOR, "input": [message] * (MAX_MESSAGES + 1)}, "input"),
        ("/v1/responses", {"model": GENERATOR, "instructions": marker, "input": [message] * MAX_MESSAGES},
         "input"),
        ("/v1/score", {"model": ENCODER, "text_1": [f"{marker} {i}" for i in range(MAX_SCORED_TEXTS + 1)],
                       "text_2": [f"b {i}" for i in range(MAX_SCORED_TEXTS + 1)]}, "text_1"),
        ("/v1/rerank", {"model": ENCODER, "query": marker,
                        "documents": [f"d {i}" for i in range(MAX_RERANKED_DOCUMENTS + 1)]}, "documents"),
        ("/v1/embeddings", {"model": ENCODER, "input": [marker] * (MAX_INPUTS_PER_REQUEST + 1)}, "input"),
        ("/v1/embeddings", {"model": marker * 10, "input": "x"}, "model"),
        ("/v1/embeddings", {"model": marker, "input": "x", "user": marker * 10}, "user"),
    ]
    for path, body, param in cases:
        response = client.post(path, json=body, headers={"x-request-id": request_id})
        assert response.status_code == 400, (path, response.status_code, response.text[:500])
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param), (path, error)
    assert str(MAX_MESSAGES) in client.post("/v1/responses", json=cases[0][1]).json()["error"]["message"]
    # what the engines can take, the schema allows: the largest score and rerank requests answer
    largest_score = {"model": ENCODER, "text_1": [f"a {i}" for i in range(MAX_SCORED_TEXTS)],
                     "text_2": [f"b {i}" for i in range(MAX_SCORED_TEXTS)]}
    assert client.post("/v1/score", json=largest_score).status_code == 200
    largest_rerank = {"model": ENCODER, "query": "q", "documents": [f"d {i}" for i in range(MAX_RERANKED_DOCUMENTS)]}
    assert client.post("/v1/rerank", json=largest_rerank).status_code == 200
    # the refusals reached the logs (their request id) without the client's text
    deadline = time.monotonic() + LOG_WAIT_S
    while not logs_containing(request_id) and time.monotonic() < deadline:
        time.sleep(1)
    assert logs_containing(request_id), "the request id never reached the session logs"
    assert logs_containing(marker) == [], "a client's text was written to the logs"


def test_a_batch_line_holding_a_unicode_line_separator_is_one_request(openai_client: Any) -> None:
    text = "one\u2028two\u0085three"  # valid unescaped inside a JSON string; str.splitlines splits there
    line = {"custom_id": "sep\u2028id", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": ENCODER, "input": text}}
    content = (json.dumps(line, ensure_ascii=False) + "\n").encode()
    assert "\u2028".encode() in content
    file_id = openai_client.files.create(file=("sep.jsonl", io.BytesIO(content)), purpose="batch").id
    batch = openai_client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings",
                                         completion_window="24h")
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(1)
        batch = openai_client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 1, batch
    rows = [json.loads(row) for row in openai_client.files.content(batch.output_file_id).text.split("\n") if row]
    assert [row["custom_id"] for row in rows] == ["sep\u2028id"]
