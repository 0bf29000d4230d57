"""The Batch API, /v1/responses, /v1/score and /v1/rerank on the real engines, with the openai client.

* A batch of 30 mixed requests (10 each of chat, completions and embeddings) uploaded with
  ``client.files.create`` and run with ``client.batches.create`` completes with 30 results equal
  to the same requests sent directly (greedy); counts are live while it runs.
* Cancelling a running batch stops it; killing the ingress replica mid-batch still completes it,
  each request answered once. Stored responses survive that kill too: a response stored just
  before it is retrieved from the new replica, the same, and continued by
  ``previous_response_id``; a background response created just before it runs to its end.
* ``client.responses.create`` answers, streamed and not, as the chat path does.
* score and rerank order passages as the cosine of ``/v1/embeddings`` does.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
import pytest

from tests.conftest import ENCODER, GENERATOR, wait_healthy

pytestmark = pytest.mark.integration

BATCH_LINES = 30
PASSAGES = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A kitten is sleeping on a rug.",
            "The central bank raised interest rates.", "Dogs and cats are popular pets."]


def kill_ingress_replica() -> None:
    """Kill the session app's ingress replica at once (no graceful shutdown), as a crash would."""
    import ray
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    replicas = details["applications"]["maas"]["deployments"]["ingress"]["replicas"]
    running = [r for r in replicas if r["state"] == "RUNNING"]
    assert len(running) == 1, replicas
    ray.kill(ray.get_actor(running[0]["actor_name"], namespace="serve"), no_restart=True)


def chat_line(i: int, max_tokens: int = 8) -> dict[str, Any]:
    return {"custom_id": f"chat-{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": GENERATOR, "messages": [{"role": "user", "content": f"Say a word about the number {i}."}],
        "temperature": 0, "max_tokens": max_tokens}}


def mixed_lines(count: int) -> list[dict[str, Any]]:
    lines = []
    for i in range(count):
        if i % 3 == 0:
            lines.append(chat_line(i))
        elif i % 3 == 1:
            lines.append({"custom_id": f"cmpl-{i}", "method": "POST", "url": "/v1/completions", "body": {
                "model": GENERATOR, "prompt": f"Item {i} of the list is", "temperature": 0, "max_tokens": 8}})
        else:
            lines.append({"custom_id": f"emb-{i}", "method": "POST", "url": "/v1/embeddings", "body": {
                "model": ENCODER, "input": f"passage number {i}"}})
    return lines


def upload(openai_client: Any, lines: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return openai_client.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch").id


def wait_for(openai_client: Any, batch_id: str, statuses: set[str], timeout_s: float = 900) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = openai_client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(1)
    raise AssertionError(f"batch {batch_id} not {statuses} in {timeout_s}s: {batch}")


def wait_for_response(openai_client: Any, response_id: str, timeout_s: float = 300) -> Any:
    """A background response once it has ended (it fails the test if it has not in ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while (response := openai_client.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"response {response_id} still {response.status}"
        time.sleep(0.5)
    return response


def results(openai_client: Any, file_id: str) -> dict[str, Any]:
    text = openai_client.files.content(file_id).text
    rows = [json.loads(line) for line in text.splitlines()]
    assert len({r["custom_id"] for r in rows}) == len(rows), "a request answered twice"
    return {r["custom_id"]: r for r in rows}


def direct_answer(client: Any, line: dict[str, Any]) -> Any:
    response = client.post(line["url"], json=line["body"])
    assert response.status_code == 200, response.text
    return response.json()


def same_answer(url: str, batched: dict[str, Any], direct: dict[str, Any]) -> bool:
    if url == "/v1/embeddings":
        return np.allclose(batched["data"][0]["embedding"], direct["data"][0]["embedding"], atol=1e-5)
    key = "message" if url == "/v1/chat/completions" else None
    pick = (lambda a: a["choices"][0]["message"]["content"]) if key else (lambda a: a["choices"][0]["text"])
    return pick(batched) == pick(direct)


def test_a_batch_of_mixed_requests_equals_the_requests_sent_directly(openai_client: Any, client: Any) -> None:
    lines = mixed_lines(BATCH_LINES)
    file_id = upload(openai_client, lines)
    batch = openai_client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                         completion_window="24h", metadata={"run": "parity"})
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == BATCH_LINES
    seen_progress = set()
    while batch.status not in ("completed", "failed", "cancelled"):
        seen_progress.add(batch.request_counts.completed)
        time.sleep(1)
        batch = openai_client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == BATCH_LINES, batch
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    assert len(seen_progress) > 2, "the counts moved while it ran"
    answered = results(openai_client, batch.output_file_id)
    assert list(answered) == [line["custom_id"] for line in lines]  # input order
    different = [line["custom_id"] for line in lines
                 if not same_answer(line["url"], answered[line["custom_id"]]["response"]["body"],
                                    direct_answer(client, line))]
    assert not different, f"batch answers differ from direct ones: {different}"
    assert batch.id in [b.id for b in openai_client.batches.list().data]


def test_cancelling_a_running_batch_stops_it(openai_client: Any) -> None:
    lines = [chat_line(i, max_tokens=24) for i in range(60)]
    batch = openai_client.batches.create(input_file_id=upload(openai_client, lines),
                                         endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 300
    while openai_client.batches.retrieve(batch.id).request_counts.completed < 2:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert openai_client.batches.cancel(batch.id).status == "cancelling"
    cancelled = wait_for(openai_client, batch.id, {"cancelled"}, timeout_s=300)
    done = cancelled.request_counts.completed
    assert 2 <= done < 60, cancelled
    assert len(results(openai_client, cancelled.output_file_id)) == done


def test_a_batch_survives_the_loss_of_the_ingress_replica(openai_client: Any, service: str) -> None:
    lines = [chat_line(i, max_tokens=16) for i in range(40)]
    batch = openai_client.batches.create(input_file_id=upload(openai_client, lines),
                                         endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 300
    while openai_client.batches.retrieve(batch.id).request_counts.completed < 5:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    asked = {"model": GENERATOR, "temperature": 0}
    stored = openai_client.responses.create(input="What is the capital of France?", max_output_tokens=8, **asked)
    background = openai_client.responses.create(input="Write a story about the sea.", max_output_tokens=128,
                                                background=True, **asked)
    kill_ingress_replica()
    time.sleep(2)
    wait_healthy(service, 300)
    assert openai_client.responses.retrieve(stored.id).to_dict() == stored.to_dict()  # read by the new replica
    follow = openai_client.responses.create(input="And of Italy?", previous_response_id=stored.id,
                                            max_output_tokens=8, **asked)
    assert follow.previous_response_id == stored.id and follow.output_text
    assert follow.usage.input_tokens > stored.usage.input_tokens + stored.usage.output_tokens  # the conversation
    finished = wait_for(openai_client, batch.id, {"completed", "failed", "cancelled"})
    assert finished.status == "completed" and finished.request_counts.completed == 40, finished
    answered = results(openai_client, finished.output_file_id)
    assert sorted(answered) == sorted(line["custom_id"] for line in lines)
    ended = wait_for_response(openai_client, background.id)
    assert ended.status in ("completed", "incomplete") and ended.output_text, ended  # its runner outlived the replica


def test_bad_batch_input_gets_the_openai_error(client: Any, openai_client: Any) -> None:
    import openai

    bad = openai_client.files.create(file=("bad.jsonl", io.BytesIO(b'{"custom_id": "a"}\nnot json\n')),
                                     purpose="batch")
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
    assert error.value.body["code"] == "invalid_batch_line" and "Line 1" in error.value.body["message"]
    unknown_model = dict(chat_line(0), body={**chat_line(0)["body"], "model": "no-such-model"})
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        openai_client.batches.create(input_file_id=upload(openai_client, [unknown_model]),
                                     endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        openai_client.batches.retrieve("batch-does-not-exist")
    with pytest.raises(openai.NotFoundError):
        openai_client.files.content("file-does-not-exist")
    wrong_type = client.post("/v1/files", content=b"{}", headers={"content-type": "application/json"})
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["type"]


def test_responses_answer_streamed_and_not_as_the_chat_path(openai_client: Any) -> None:
    asked = {"model": GENERATOR, "input": "What is the capital of France?", "temperature": 0,
             "max_output_tokens": 16}
    response = openai_client.responses.create(**asked)
    chat = openai_client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": asked["input"]}], temperature=0, max_tokens=16)
    assert response.output_text == chat.choices[0].message.content and "Paris" in response.output_text
    assert response.usage.input_tokens == chat.usage.prompt_tokens and response.usage.output_tokens > 0
    events = list(openai_client.responses.create(**asked, instructions=None, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    streamed = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert streamed == response.output_text == events[-1].response.output_text


def test_score_and_rerank_order_passages_as_the_embeddings_cosine(openai_client: Any, client: Any) -> None:
    query = "Where is the cat?"
    vectors = np.array([d.embedding for d in openai_client.embeddings.create(
        model=ENCODER, input=[query, *PASSAGES], encoding_format="float").data])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit[1:] @ unit[0]
    scored = client.post("/v1/score", json={"model": ENCODER, "text_1": query, "text_2": PASSAGES}).json()
    assert np.allclose([d["score"] for d in scored["data"]], cosines, atol=1e-4)
    for path in ("/v1/rerank", "/v2/rerank"):
        ranked = client.post(path, json={"model": ENCODER, "query": query, "documents": PASSAGES,
                                         "top_n": 3}).json()
        assert [r["index"] for r in ranked["results"]] == list(np.argsort(-cosines)[:3])
        assert ranked["results"][0]["document"]["text"] == PASSAGES[int(np.argmax(cosines))]
    uneven = client.post("/v1/score", json={"model": ENCODER, "text_1": ["a", "b"], "text_2": ["c"] * 3})
    assert uneven.status_code == 400 and uneven.json()["error"]["param"] == "text_1"
    unknown = client.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
    assert unknown.status_code == 404
