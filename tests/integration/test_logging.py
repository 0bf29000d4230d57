"""Request ids and logs: every response carries ``x-request-id``, the id shows up in the
service's logs, and what clients send (prompts, texts) does not."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLASSIFIER, GENERATOR

pytestmark = pytest.mark.integration

LOG_WAIT_S = 30.0


def session_logs() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path())  # noqa: SLF001 - the live session


def logs_containing(needle: str) -> list[Path]:
    found = []
    for path in session_logs().rglob("*"):
        if path.is_file() and path.suffix in {".log", ".out", ".err", ""}:
            try:
                if needle in path.read_text(encoding="utf-8", errors="replace"):
                    found.append(path)
            except OSError:
                continue
    return found


def test_request_id_is_returned_and_logged_but_prompts_are_not(client: httpx.Client) -> None:
    secret = f"prompt-marker-{uuid.uuid4().hex}"
    request_id = f"test-{uuid.uuid4().hex}"
    chat = client.post("/v1/chat/completions", headers={"x-request-id": request_id}, json={
        "model": GENERATOR, "max_tokens": 2, "messages": [{"role": "user", "content": secret}]})
    assert chat.status_code == 200 and chat.headers["x-request-id"] == request_id
    classify = client.post("/v1/classify", json={"model": CLASSIFIER, "input": secret})
    assert classify.status_code == 200 and classify.headers.get("x-request-id")
    deadline = time.monotonic() + LOG_WAIT_S
    while not logs_containing(request_id) and time.monotonic() < deadline:
        time.sleep(1)
    assert logs_containing(request_id), "the request id never reached the session logs"
    assert logs_containing(secret) == [], "a client's text was written to the logs"
