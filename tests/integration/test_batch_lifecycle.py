"""Batches and files that always end, on the session app (no keys: its caps hold for the whole
service). Each test puts a batch's state straight into the app's ``batch_dir`` where the end it
checks would otherwise be a race, so each takes seconds:

* a batch whose input file is gone ends ``failed`` (``input_file_not_found``) and its runner exits;
* a batch past its completion window ends ``expired``, its requests in the error file;
* deleting the input of a batch that has not ended is a 409 with the OpenAI body;
* one batch more than ``ingress.max_open_batches_per_key`` is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deployments.batch_runner import runner_name
from maas.config import AppConfig
from maas.endpoints.batches.protocol import BatchObject
from maas.endpoints.batches.store import BatchStore
from maas.protocol.base import now
from tests.conftest import ENCODER

pytestmark = pytest.mark.integration

EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
def store(app_config: AppConfig) -> BatchStore:
    return BatchStore(app_config.batch_dir)


@pytest.fixture
def input_file(client: httpx.Client) -> Iterator[str]:
    lines = "".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": EMBEDDINGS,
                                "body": {"model": ENCODER, "input": f"text {i}"}}) + "\n" for i in range(3))
    response = client.post("/v1/files", files={"file": ("in.jsonl", lines.encode())}, data={"purpose": "batch"})
    assert response.status_code == 200, response.text
    assert response.json()["expires_at"] > now()
    yield response.json()["id"]
    client.delete(f"/v1/files/{response.json()['id']}")


def planted(store: BatchStore, file_id: str, **fields: Any) -> BatchObject:
    """A batch written straight to the store (no runner yet), as the service would write it."""
    batch = BatchObject(endpoint=EMBEDDINGS, input_file_id=file_id, expires_at=now() + 3600, **fields)
    batch.request_counts.total = 3
    return store.create(batch, owner=None)


def wait_status(client: httpx.Client, batch_id: str, statuses: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.get(f"/v1/batches/{batch_id}").json()  # starts its runner if there is none
        if batch["status"] in statuses or time.monotonic() > deadline:
            assert batch["status"] in statuses, batch
            return batch
        time.sleep(0.5)


def runner_exits(batch_id: str, timeout_s: float = 30) -> bool:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(runner_name(batch_id), namespace="serve")
        except ValueError:
            return True
        time.sleep(0.5)
    return False


def test_a_batch_whose_input_file_is_gone_fails_and_its_runner_exits(client: httpx.Client,
                                                                       store: BatchStore) -> None:
    batch = planted(store, "file-gone0000")
    done = wait_status(client, batch.id, {"failed"})
    assert done["failed_at"] and done["errors"]["data"][0]["code"] == "input_file_not_found"
    assert "file-gone0000" in done["errors"]["data"][0]["message"]
    assert runner_exits(batch.id)


def test_a_batch_past_its_window_ends_expired(client: httpx.Client, store: BatchStore, input_file: str) -> None:
    batch = planted(store, input_file, status="in_progress", in_progress_at=now() - 10)
    store.update(batch.id, lambda b: setattr(b, "expires_at", now() - 1))
    done = wait_status(client, batch.id, {"expired"})
    assert done["expired_at"] and done["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    errors = client.get(f"/v1/files/{done['error_file_id']}/content").text.splitlines()
    assert [json.loads(x)["error"]["code"] for x in errors] == ["batch_expired"] * 3
    assert runner_exits(batch.id)
    for file_id in (done["output_file_id"], done["error_file_id"]):
        assert client.delete(f"/v1/files/{file_id}").status_code == 200


def test_deleting_the_input_of_an_active_batch_is_a_409(client: httpx.Client, store: BatchStore,
                                                        input_file: str) -> None:
    batch = planted(store, input_file, status="cancelling")
    try:
        response = client.delete(f"/v1/files/{input_file}")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "file_in_use"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    finally:
        store.update(batch.id, lambda b: setattr(b, "status", "cancelled"))
    assert client.delete(f"/v1/files/{input_file}").status_code == 200  # the batch ended


def test_one_open_batch_over_the_cap_is_a_429(client: httpx.Client, store: BatchStore, input_file: str,
                                              app_config: AppConfig) -> None:
    active = {"validating", "in_progress", "finalizing", "cancelling"}
    open_now = sum(b.status in active for b, _ in store.list())
    fakes = [planted(store, input_file, status="in_progress")
             for _ in range(max(0, app_config.ingress.max_open_batches_per_key - open_now))]
    try:
        response = client.post("/v1/batches", json={"input_file_id": input_file, "endpoint": EMBEDDINGS,
                                                     "completion_window": "24h"})
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "too_many_open_batches"
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        for fake in fakes:
            store.update(fake.id, lambda b: setattr(b, "status", "cancelled"))
