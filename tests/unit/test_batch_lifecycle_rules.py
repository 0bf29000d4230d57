"""Batches and files that always end, without Ray: a runner that fails marks its batch ``failed``,
a batch past its window ends ``expired``, counts come from the results after a crash, files
expire, and one key cannot hold more than its open batches and stored bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_batch_api import CHAT, line

from deployments.batch_runner import BatchRun
from maas.cli import build_parser
from maas.edge.http import error_response
from maas.edge.key_file import ApiKey, add_key, read_key_file
from maas.endpoints.batches.api import BatchApi, BatchLimits
from maas.endpoints.batches.lines import answered
from maas.endpoints.batches.protocol import BatchCreateRequest, BatchObject
from maas.endpoints.batches.store import BatchStore, FileStore
from maas.protocol.errors import ConflictError, NotFoundError, PayloadTooLargeError, RateLimitError


class Clock:
    """A settable clock (seconds) for expiry."""

    def __init__(self, t: int = 1_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


class FakeHandle:
    """The application's handle: answers each request with ``status`` (200 unless named)."""

    def __init__(self, statuses: dict[str, int] | None = None) -> None:
        self.statuses, self.calls = statuses or {}, []
        self.batch_call = SimpleNamespace(remote=self._call)

    async def _call(self, owner: str | None, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], None]:
        custom_id = body["messages"][0]["content"]
        self.calls.append(custom_id)
        return self.statuses.get(custom_id, 200), {"id": custom_id}, None


def new_api(tmp_path: Path, clock: Clock | None = None, key: ApiKey | None = None,
            **limits: Any) -> tuple[BatchApi, list[str]]:
    started: list[str] = []
    api = BatchApi(FileStore(tmp_path), BatchStore(tmp_path), lambda b: started.append(b.id),
                   BatchLimits(**limits), key_of=lambda _: key, clock=clock or Clock())
    return api, started


def new_batch(api: BatchApi, ids: str = "abc", owner: str | None = "team-a") -> BatchObject:
    file = api.upload("\n".join(line(c) for c in ids).encode(), "in.jsonl", "batch", owner)
    return api.create(BatchCreateRequest(input_file_id=file.id, endpoint=CHAT), owner)


def run(tmp_path: Path, batch_id: str, handle: Any, clock: Clock | None = None) -> BatchObject:
    def handle_of() -> Any:
        if isinstance(handle, Exception):
            raise handle
        return handle

    asyncio.run(BatchRun(str(tmp_path), batch_id, 2, file_expiry_s=60, clock=clock or Clock()).run(handle_of))
    return BatchStore(tmp_path).get(batch_id)[0]


def ids_in(tmp_path: Path, file_id: str | None) -> list[str]:
    assert file_id is not None
    return [json.loads(x)["custom_id"] for x in FileStore(tmp_path).content(file_id).decode().splitlines()]


# ------------------------------------------------------------------------------ the runner


def test_a_run_completes_with_counts_from_the_results_after_a_crash(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path)
    batch = new_batch(api)
    store = BatchStore(tmp_path)
    store.append_result(batch.id, answered("a", 200, {"id": "a"}))  # a run that crashed after "a" was recorded
    store.update(batch.id, lambda b: setattr(b.request_counts, "completed", 7))  # and counts that drifted
    handle = FakeHandle({"c": 400})
    done = run(tmp_path, batch.id, handle)
    assert sorted(handle.calls) == ["b", "c"]  # "a" is not sent again
    assert done.status == "completed" and done.completed_at is not None
    assert done.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert ids_in(tmp_path, done.output_file_id) == ["a", "b"] and ids_in(tmp_path, done.error_file_id) == ["c"]
    output = FileStore(tmp_path).get(done.output_file_id or "")[0]
    assert output.expires_at == Clock()() + 60  # the outputs expire too


def test_a_runner_whose_input_file_is_gone_marks_the_batch_failed(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path)
    batch = new_batch(api)
    FileStore(tmp_path).delete(batch.input_file_id)  # gone behind the API's back
    done = run(tmp_path, batch.id, AssertionError("the handle is not needed"))
    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None
    error = done.errors.data[0]
    assert (error.code, error.param) == ("input_file_not_found", "input_file_id")
    assert batch.input_file_id in error.message


def test_any_failure_of_a_run_marks_the_batch_failed_without_its_message(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path)
    batch = new_batch(api)
    done = run(tmp_path, batch.id, RuntimeError("/secret/path of the failure"))
    assert done.status == "failed" and done.errors is not None
    assert done.errors.data[0].code == "batch_failed"
    assert "RuntimeError" in done.errors.data[0].message and "secret" not in done.errors.data[0].message
    assert api.delete(batch.input_file_id, "team-a").deleted  # it ended: its input may go


def test_a_batch_past_its_window_ends_expired_and_reports_the_requests_not_run(tmp_path: Path) -> None:
    clock = Clock()
    api, _ = new_api(tmp_path, clock)
    batch = new_batch(api)
    BatchStore(tmp_path).append_result(batch.id, answered("b", 200, {"id": "b"}))
    clock.t = batch.expires_at or 0  # the 24-hour window is over
    handle = FakeHandle()
    done = run(tmp_path, batch.id, handle, clock)
    assert handle.calls == []
    assert done.status == "expired" and done.expired_at == clock.t
    assert ids_in(tmp_path, done.output_file_id) == ["b"] and ids_in(tmp_path, done.error_file_id) == ["a", "c"]
    errors = FileStore(tmp_path).content(done.error_file_id or "").decode().splitlines()
    assert {json.loads(x)["error"]["code"] for x in errors} == {"batch_expired"}


# ------------------------------------------------------------------------------ caps


def test_open_batches_are_capped_per_key_with_a_retry_after(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path, max_open_batches=2)
    first, _ = new_batch(api), new_batch(api)
    with pytest.raises(RateLimitError, match="at most 2") as error:
        new_batch(api)
    assert error.value.code == "too_many_open_batches" and error.value.retry_after_s > 0
    response = error_response(error.value)
    assert response.status_code == 429 and "retry-after" in response.headers
    new_batch(api, owner="team-b")  # another key is not held back
    api.batches.update(first.id, lambda b: setattr(b, "status", "completed"))
    new_batch(api)  # one ended: room for one more


def test_a_key_sets_its_own_caps(tmp_path: Path) -> None:
    key = ApiKey(id="team-a", sha256="0" * 64, max_open_batches=1, max_storage_mib=3)
    limits = BatchLimits().for_key(key)
    assert (limits.max_open_batches, limits.max_storage_bytes) == (1, 3 * 1024 * 1024)
    assert BatchLimits().for_key(None) == BatchLimits()
    api, _ = new_api(tmp_path, key=key, max_open_batches=5)
    new_batch(api)
    with pytest.raises(RateLimitError):
        new_batch(api)


def chunks(size: int, taken: list[int]) -> Iterator[bytes]:
    """Endless 100-byte chunks of a JSON line (counting those taken)."""
    while True:
        taken.append(1)
        yield b" " * (size - 1) + b"\n"


def test_storage_is_capped_per_key_while_the_upload_streams(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path, max_storage_bytes=1000, max_file_bytes=800)
    kept = api.upload((line("a") + " " * 400).encode(), "in.jsonl", "batch", "team-a")
    taken: list[int] = []
    with pytest.raises(PayloadTooLargeError, match="storage quota") as error:
        api.upload(chunks(100, taken), "big.jsonl", "batch", "team-a")
    assert error.value.code == "storage_quota_exceeded" and len(taken) <= 6  # stopped at the quota
    taken.clear()
    with pytest.raises(PayloadTooLargeError, match="limit of 800 bytes"):
        api.upload(chunks(100, taken), "big.jsonl", "batch", "team-b")
    assert len(taken) == 9  # stopped at the file limit, not read to the end
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == sorted([f"{kept.id}.json", f"{kept.id}.jsonl"])
    api.upload(line("b").encode(), "in.jsonl", "batch", "team-b")  # team-b's storage is its own
    api.delete(kept.id, "team-a")
    api.upload(line("c").ljust(800).encode(), "in.jsonl", "batch", "team-a")  # room again: 800 bytes


def test_an_upload_is_written_in_chunks_and_a_blank_one_leaves_nothing(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path)
    parts = [line("a").encode()[:10], line("a").encode()[10:], b"\n"]
    file = api.upload(iter(parts), "in.jsonl", "batch", None)
    assert api.content(file.id, None) == b"".join(parts) and file.bytes == sum(map(len, parts))
    with pytest.raises(Exception, match="empty"):
        api.upload(iter([b"  ", b"\n"]), "in.jsonl", "batch", None)
    assert len(list((tmp_path / "files").iterdir())) == 2


# ------------------------------------------------------------------------------ expiry, deletion


def test_expired_files_are_deleted_on_access_and_by_the_sweep_unless_a_batch_reads_them(tmp_path: Path) -> None:
    clock = Clock()
    api, _ = new_api(tmp_path, clock, file_expiry_s=100)
    old = api.upload(line("a").encode(), "in.jsonl", "batch", None)
    assert old.expires_at == clock.t + 100
    batch = new_batch(api, owner=None)
    clock.t += 100
    with pytest.raises(NotFoundError):
        api.file(old.id, None)  # looked at past its expiry: deleted
    assert not (tmp_path / "files" / f"{old.id}.jsonl").exists()
    assert [f.id for f in api.list_files(None).data] == [batch.input_file_id]  # an active batch reads it
    api.batches.update(batch.id, lambda b: setattr(b, "status", "completed"))
    assert api.list_files(None).data == []  # the sweep of the listing
    assert list((tmp_path / "files").iterdir()) == []


def test_a_sweep_hands_batches_past_their_window_to_their_runner(tmp_path: Path) -> None:
    clock = Clock()
    api, started = new_api(tmp_path, clock)
    batch = new_batch(api)
    started.clear()
    clock.t = (batch.expires_at or 0) + 1
    api.upload(line("x").encode(), "in.jsonl", "batch", "team-b")  # any upload sweeps
    assert started == [batch.id]  # its runner (started again if lost) ends it expired


def test_deleting_the_input_of_an_active_batch_is_a_409_with_the_openai_body(tmp_path: Path) -> None:
    api, _ = new_api(tmp_path)
    batch = new_batch(api)
    for status in ("validating", "in_progress", "finalizing", "cancelling"):
        api.batches.update(batch.id, lambda b, s=status: setattr(b, "status", s))
        with pytest.raises(ConflictError) as error:
            api.delete(batch.input_file_id, "team-a")
    response = error_response(error.value)
    body = json.loads(bytes(response.body))
    assert response.status_code == 409
    assert body["error"]["code"] == "file_in_use" and body["error"]["param"] == "file_id"
    assert set(body["error"]) == {"message", "type", "param", "code"}


# ------------------------------------------------------------------------------ key file, CLI


def test_maas_keys_add_stores_the_batch_caps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["keys", "add", "--file", str(tmp_path / "keys.yaml"), "--id", "team-a",
                                      "--max-open-batches", "2", "--max-storage-mib", "64"])
    assert args.func(args) == 0
    key = read_key_file(tmp_path / "keys.yaml").keys[0]
    assert (key.max_open_batches, key.max_storage_mib) == (2, 64)
    add_key(tmp_path / "keys.yaml", "team-b")
    assert "max_open_batches" not in (tmp_path / "keys.yaml").read_text().split("team-b")[1]
    capsys.readouterr()


# ------------------------------------------------------------------------------ over HTTP


class RouteIngress:
    """What the file routes call, over a real :class:`BatchApi` (recording the chunks it gets)."""

    def __init__(self, api: BatchApi) -> None:
        self.batch_api, self.chunk_sizes = api, []

    def served_models(self) -> frozenset[str]:
        return frozenset()

    def create_file(self, content: Any, filename: str, purpose: str = "batch", owner: str | None = None) -> Any:
        def counted() -> Iterator[bytes]:
            for chunk in content:
                self.chunk_sizes.append(len(chunk))
                yield chunk

        return self.batch_api.upload(counted(), filename, purpose, owner)


def test_the_upload_route_streams_in_chunks_and_the_file_routes_answer_409_and_413(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from test_tenant_isolation_rules import RegistryActor

    from maas.config import IngressConfig
    from maas.endpoints.app import build_app

    api, _ = new_api(tmp_path, max_storage_bytes=4 * 1024 * 1024)
    ingress = RouteIngress(api)
    app = build_app(ingress, IngressConfig())
    app.state.recorder._actor = RegistryActor()  # noqa: SLF001 - no Ray in unit tests
    client = TestClient(app)
    content = line("a").ljust(5 * 1024 * 1024 // 2).encode() + b"\n"  # one request, 2.5 MiB
    uploaded = client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    assert len(ingress.chunk_sizes) >= 3 and max(ingress.chunk_sizes) <= 1024 * 1024  # never whole
    assert api.content(uploaded.json()["id"], None) == content
    api.create(BatchCreateRequest(input_file_id=uploaded.json()["id"], endpoint=CHAT), None)
    refused = client.delete(f"/v1/files/{uploaded.json()['id']}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "file_in_use"
    over = client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert over.status_code == 413 and over.json()["error"]["code"] == "storage_quota_exceeded"
