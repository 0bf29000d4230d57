"""The Batch API's per-key caps hold when one key's requests run at once, a key at its open
batches is refused before its input file is read, and a batch's input is checked once: at its
creation, not again by its runner. Without Ray."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_batch_api import CHAT, line
from test_batch_lifecycle_rules import FakeHandle, new_api, new_batch, run

from maas.endpoints.batches import lines as rules
from maas.endpoints.batches.protocol import BatchCreateRequest
from maas.endpoints.batches.store import BatchStore
from maas.protocol.errors import PayloadTooLargeError, RateLimitError

THREADS = 6


def at_once(work: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """``work(i)`` in ``count`` threads started together: what each returned or raised."""
    outcomes: list[Any] = [None] * count
    start = threading.Barrier(count)

    def one(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_uploads_of_one_key_at_once_cannot_pass_its_storage_quota_together(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path, max_storage_bytes=1000, max_file_bytes=1000)
    streamed = threading.Barrier(THREADS)

    def upload(i: int) -> Any:
        def chunks() -> Iterator[bytes]:
            yield line(f"u{i}").ljust(399).encode() + b"\n"  # 400 bytes: two fit, not three
            streamed.wait(timeout=30)  # every upload saw 1000 bytes of room when it started
        return api.upload(chunks(), "in.jsonl", "batch", "team-a")

    outcomes = at_once(upload)
    kept = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, PayloadTooLargeError)]
    assert (len(kept), len(refused)) == (2, THREADS - 2), outcomes
    assert {o.code for o in refused} == {"storage_quota_exceeded"}
    assert api.stored_bytes("team-a") == 800
    stored = sorted(p.name for p in (tmp_path / "files").iterdir())
    assert stored == sorted(f"{f.id}{suffix}" for f in kept for suffix in (".json", ".jsonl"))  # no leftovers


def test_batches_of_one_key_created_at_once_cannot_pass_its_open_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, started = new_api(tmp_path, max_open_batches=2)
    files = [api.upload(line(f"b{i}").encode(), "in.jsonl", "batch", "team-a") for i in range(THREADS)]
    requests = [BatchCreateRequest(input_file_id=f.id, endpoint=CHAT) for f in files]
    for request in requests:
        api.models_of(request, "team-a")  # admission: each saw no open batch
    listing = BatchStore.list

    def slow_listing(store: BatchStore) -> Any:
        time.sleep(0.05)  # a wide gap between counting the open batches and adding one
        return listing(store)

    monkeypatch.setattr(BatchStore, "list", slow_listing)
    outcomes = at_once(lambda i: api.create(requests[i], "team-a"))
    created = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(created) == 2 and len(started) == 2, outcomes
    assert all(isinstance(o, RateLimitError) and o.code == "too_many_open_batches"
               for o in outcomes if o not in created)
    assert len(api.list_batches("team-a").data) == 2


def test_a_key_at_its_open_batches_is_refused_before_its_file_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, _ = new_api(tmp_path, max_open_batches=1)
    first = new_batch(api)
    file = api.upload(line("x").encode(), "in.jsonl", "batch", "team-a")
    reads: list[str] = []
    content = api.files.content
    monkeypatch.setattr(api.files, "content", lambda file_id: reads.append(file_id) or content(file_id))
    request = BatchCreateRequest(input_file_id=file.id, endpoint=CHAT)
    for step in (lambda: api.models_of(request, "team-a"), lambda: api.create(request, "team-a")):
        with pytest.raises(RateLimitError, match="at most 1"):
            step()
    assert reads == []
    api.batches.update(first.id, lambda b: setattr(b, "status", "completed"))  # room again
    assert api.models_of(request, "team-a") == ["chat"] and reads == [file.id]


def test_a_batch_input_is_checked_at_creation_and_only_decoded_by_its_runner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[str] = []
    read, check = rules.read_batch_input, rules.request_of
    monkeypatch.setattr(rules, "read_batch_input", lambda c, e: checks.append("file") or read(c, e))
    monkeypatch.setattr(rules, "request_of", lambda url, body: checks.append("request") or check(url, body))
    api, _ = new_api(tmp_path)
    batch = new_batch(api, ids="abc")
    assert checks == ["file", "request", "request", "request"]
    handle = FakeHandle({"b": 400})
    done = run(tmp_path, batch.id, handle)
    assert checks == ["file", "request", "request", "request"]  # the runner checked nothing again
    assert sorted(handle.calls) == ["a", "b", "c"] and done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}


def test_the_decoded_lines_are_those_the_check_accepted() -> None:
    content = ("\n" + line("a") + "\r\n\n" + line("b\u2028c", temperature=0.5) + "\n").encode()
    checked = rules.read_batch_input(content, CHAT)
    assert rules.checked_batch_input(content) == checked
    assert [x.custom_id for x in checked] == ["a", "b\u2028c"]
