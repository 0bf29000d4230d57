"""The Batch API without Ray: input files checked line by line, files and batches per key,
cancellation, and the output and error files in input order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.endpoints.batches import lines as rules
from maas.endpoints.batches.api import BatchApi, BatchLimits
from maas.endpoints.batches.protocol import BatchCreateRequest, BatchObject
from maas.endpoints.batches.store import BatchStore, FileStore
from maas.protocol.errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
)

CHAT = "/v1/chat/completions"


def line(custom_id: str, model: str = "chat", url: str = CHAT, **body: object) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def api(tmp_path: Path) -> tuple[BatchApi, list[str]]:
    started: list[str] = []
    return BatchApi(FileStore(tmp_path), BatchStore(tmp_path), lambda b: started.append(b.id), BatchLimits(max_file_bytes=10_000)), started


def test_input_lines_are_read_with_their_models() -> None:
    embed = json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/embeddings",
                        "body": {"model": "enc", "input": "c"}})
    content = "\n".join([line("a"), "", line("b", model="other"), embed]).encode()
    lines = rules.read_batch_input(content, CHAT)  # a line may call any batch endpoint
    assert [x.custom_id for x in lines] == ["a", "b", "c"]
    assert rules.models_of(lines) == ["chat", "other", "enc"]
    served = {CHAT: {"chat", "other"}, "/v1/embeddings": {"enc"}}
    rules.check_models(lines, served)
    with pytest.raises(ModelNotFoundError, match="Request 3 .*'enc' is not served for /v1/embeddings"):
        rules.check_models(lines, {CHAT: {"chat", "other"}})


@pytest.mark.parametrize("content, reason", [
    ("not json", "Line 1 .*not JSON"),
    (line("a") + "\n" + line("a"), "Line 2 .*used twice"),
    (line("a", url="/v1/rerank"), "Line 1 .*url must be one of"),
    (line("a", stream=True), "Line 1 .*cannot stream"),
    (line("a", temperature=9), "Line 1 .*temperature"),
    (json.dumps({"custom_id": "a", "method": "GET", "url": CHAT, "body": {}}), "Line 1 "),
    ("\n\n", "no requests"),
])
def test_a_bad_line_is_a_400_that_names_it(content: str, reason: str) -> None:
    with pytest.raises(InvalidRequestError, match=reason) as error:
        rules.read_batch_input(content.encode(), CHAT)
    assert error.value.param == "input_file_id"


def test_files_and_batches_belong_to_their_key(tmp_path: Path) -> None:
    batches, started = api(tmp_path)
    file = batches.upload((line("a") + "\n").encode(), "in.jsonl", "batch", owner="team-a")
    assert batches.content(file.id, "team-a").startswith(b'{"custom_id"')
    with pytest.raises(NotFoundError):
        batches.file(file.id, "team-b")
    assert batches.list_files("team-b").data == [] and batches.list_files("team-a").data[0].id == file.id
    request = BatchCreateRequest(input_file_id=file.id, endpoint=CHAT)
    assert batches.models_of(request, "team-a") == ["chat"]
    with pytest.raises(NotFoundError):
        batches.create(request, "team-b")
    batch = batches.create(request, "team-a")
    assert started == [batch.id] and batch.request_counts.total == 1 and batch.status == "validating"
    with pytest.raises(NotFoundError):
        batches.batch(batch.id, "team-b")
    assert batches.list_batches("team-a").data[0].id == batch.id
    assert batches.cancel(batch.id, "team-a").status == "cancelling"
    with pytest.raises(ConflictError, match="input of batch .* cancelling") as error:
        batches.delete(file.id, "team-a")  # the batch has not ended: it may still read its input
    assert error.value.status_code == 409 and error.value.code == "file_in_use"
    batches.batches.update(batch.id, lambda b: setattr(b, "status", "cancelled"))
    assert batches.delete(file.id, "team-a").deleted
    with pytest.raises(NotFoundError):
        batches.file(file.id, "team-a")
    with pytest.raises(NotFoundError):
        batches.file("../etc/passwd", "team-a")


def test_a_batch_input_is_read_once_for_admission_and_creation(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    batches, _ = api(tmp_path)
    file = batches.upload((line("a") + "\n" + line("b", model="other") + "\n").encode(), "in.jsonl", "batch", None)
    reads: list[str] = []
    read = rules.read_batch_input
    monkeypatch.setattr(rules, "read_batch_input", lambda content, endpoint: reads.append(endpoint) or read(content, endpoint))
    request = BatchCreateRequest(input_file_id=file.id, endpoint=CHAT)
    assert batches.models_of(request, None) == ["chat", "other"]
    assert batches.create(request, None, {CHAT: {"chat", "other"}}).request_counts.total == 2
    assert reads == [CHAT]
    assert "_input_lines" not in request.model_dump_json()


def test_uploads_are_batch_inputs_within_the_size_limit(tmp_path: Path) -> None:
    batches, _ = api(tmp_path)
    with pytest.raises(InvalidRequestError) as error:
        batches.upload(b"x", "in.jsonl", "fine-tune", None)
    assert error.value.param == "purpose"
    with pytest.raises(PayloadTooLargeError):
        batches.upload(b"x" * 10_001, "in.jsonl", "batch", None)


def test_results_are_appended_once_and_split_into_output_and_errors_in_input_order(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    batch = store.create(BatchObject(endpoint=CHAT, input_file_id="file-x"), owner=None)
    lines = rules.read_batch_input("\n".join(line(c) for c in "abc").encode(), CHAT)
    store.append_result(batch.id, rules.answered("c", 200, {"id": "3"}))
    store.append_result(batch.id, rules.answered("a", 400, {"error": {"message": "bad"}}))
    with open(tmp_path / "jobs" / batch.id / "results.jsonl", "a") as torn:
        torn.write('{"custom_id": "b", "resp')  # a crash mid-write: skipped; b ran again
    store.append_result(batch.id, rules.answered("b", 200, {"id": "2"}))
    assert store.done_ids(batch.id) == {"c": False, "a": False, "b": False}
    output, errors = rules.output_files(lines, store.results(batch.id))
    assert [json.loads(x)["custom_id"] for x in output.splitlines()] == ["b", "c"]
    assert [json.loads(x)["custom_id"] for x in errors.splitlines()] == ["a"]


def test_a_line_holding_a_unicode_line_separator_is_one_request() -> None:
    content = line("a\u2028b\u0085c\x1cd") + "\r\n" + line("e")  # unescaped U+2028, NEL, FS
    lines = rules.read_batch_input(content.encode(), CHAT)
    assert [x.custom_id for x in lines] == ["a\u2028b\u0085c\x1cd", "e"]


@pytest.mark.parametrize("torn", ["é".encode()[:1], "日本".encode()[:4], b'{"custom_id": "b", "respo\xe6\x97'])
def test_a_last_line_torn_inside_a_character_is_skipped_and_repaired(tmp_path: Path, torn: bytes) -> None:
    store = BatchStore(tmp_path)
    batch = store.create(BatchObject(endpoint=CHAT, input_file_id="file-x"), owner=None)
    store.append_result(batch.id, rules.answered("ação", 200, {"id": "1", "text": "日本語"}))
    with open(tmp_path / "jobs" / batch.id / "results.jsonl", "ab") as out:
        out.write(torn)  # a crash in the middle of a multi-byte UTF-8 character
    assert store.done_ids(batch.id) == {"ação": False}
    store.append_result(batch.id, rules.answered("b", 200, {"id": "2"}))  # the run resumes
    assert store.done_ids(batch.id) == {"ação": False, "b": False}
