"""Stored responses on disk: owners, retention, the per-key cap, atomic writes, ids that cannot
name a path, and what ``previous_response_id`` continues."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from maas.endpoints.generation.protocol import (
    FunctionCallInput,
    FunctionCallItem,
    InputMessage,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
)
from maas.endpoints.responses.api import ResponseLimits, StoredResponses
from maas.endpoints.responses.store import ResponseStore, StoredResponse
from maas.protocol.errors import NotFoundError, PayloadTooLargeError

DAY = 24 * 3600


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def answered(text: str, request: ResponsesRequest) -> ResponseObject:
    return ResponseObject(model=request.model, store=True, previous_response_id=request.previous_response_id,
                          output=[OutputMessage(content=[OutputText(text=text)])])


def saved(api: StoredResponses, text_in: str, text_out: str, owner: str | None = "alice",
          previous: str | None = None) -> ResponseObject:
    request = ResponsesRequest(model="m", input=text_in, previous_response_id=previous)
    context = api.context_of(request, owner)
    response = answered(text_out, request)
    api.save(request, response, context, owner)
    return response


@pytest.fixture
def api(tmp_path: Path) -> StoredResponses:
    return StoredResponses(ResponseStore(tmp_path), ResponseLimits(retention_s=DAY, max_per_key=3))


def test_a_response_is_read_back_by_its_owner_only(api: StoredResponses) -> None:
    response = saved(api, "Hi", "Hello")
    assert api.retrieve(response.id, "alice") == response
    for other in ("bob", None):  # another key, and no key, see nothing
        with pytest.raises(NotFoundError) as error:
            api.retrieve(response.id, other)
        assert error.value.code == "response_not_found" and error.value.param == "response_id"
        with pytest.raises(NotFoundError):
            api.delete(response.id, other)
        with pytest.raises(NotFoundError) as error:
            api.context_of(ResponsesRequest(model="m", input="x", previous_response_id=response.id), other)
        assert error.value.param == "previous_response_id"
    assert api.retrieve(response.id, "alice") == response  # still there


def test_delete_then_404_and_a_later_response_keeps_its_conversation(api: StoredResponses) -> None:
    first = saved(api, "My name is Ada.", "Hello Ada.")
    second = saved(api, "What is my name?", "Ada.", previous=first.id)
    assert api.delete(first.id, "alice").deleted
    with pytest.raises(NotFoundError):
        api.retrieve(first.id, "alice")
    with pytest.raises(NotFoundError):
        api.delete(first.id, "alice")
    third = ResponsesRequest(model="m", input="And again?", previous_response_id=second.id)
    context = api.context_of(third, "alice")
    assert [(type(i).__name__, getattr(i, "role", None)) for i in context] == [
        ("InputMessage", "user"), ("InputMessage", "assistant"), ("InputMessage", "user"),
        ("InputMessage", "assistant")]
    assert [i.content if isinstance(i.content, str) else i.content[0].text for i in context] == [
        "My name is Ada.", "Hello Ada.", "What is my name?", "Ada."]


def test_input_items_are_the_conversation_s_then_the_request_s_with_ids_newest_first(
        api: StoredResponses) -> None:
    first = saved(api, "one", "1")
    request = ResponsesRequest(model="m", previous_response_id=first.id, input=[
        {"role": "user", "content": "two"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "3"}])
    response = answered("done", request)
    api.save(request, response, api.context_of(request, "alice"), "alice")
    page = api.input_items(response.id, "alice")
    assert [(item["type"], item.get("role")) for item in page.data] == [
        ("function_call_output", None), ("function_call", None), ("message", "user"),
        ("message", "assistant"), ("message", "user")]  # then first's output and its input
    assert page.data[2]["content"] == [{"type": "input_text", "text": "two"}]
    assert page.data[3]["content"][0]["text"] == "1" and page.data[4]["content"][0]["text"] == "one"
    assert page.data[3]["id"] == first.output[0].id  # an output item keeps its id
    assert page.data[4]["id"] == api.input_items(first.id, "alice").data[0]["id"]
    assert all(item["id"] for item in page.data) and page.first_id == page.data[0]["id"]
    oldest = api.input_items(response.id, "alice", limit=1, order="asc")
    assert oldest.data[0]["content"][0]["text"] == "one" and oldest.has_more
    after = api.input_items(response.id, "alice", order="asc", after=page.data[2]["id"])
    assert [item["type"] for item in after.data] == ["function_call", "function_call_output"]


def test_function_calls_continue_as_input_items(api: StoredResponses) -> None:
    request = ResponsesRequest(model="m", input="Weather in Paris?")
    response = ResponseObject(model="m", output=[FunctionCallItem(call_id="call_9", name="get_weather",
                                                                  arguments='{"city": "Paris"}')])
    api.save(request, response, [], "alice")
    context = api.context_of(ResponsesRequest(model="m", input="x", previous_response_id=response.id), "alice")
    assert isinstance(context[0], InputMessage)
    assert isinstance(context[1], FunctionCallInput) and context[1].call_id == "call_9"


def test_responses_past_retention_are_gone(tmp_path: Path) -> None:
    clock = Clock()
    api = StoredResponses(ResponseStore(tmp_path, clock=clock), ResponseLimits(retention_s=DAY, max_per_key=10))
    old = saved(api, "a", "b")
    path = next(api.store.root.rglob(f"{old.id}.json"))
    os.utime(path, (clock.now - 2 * DAY, clock.now - 2 * DAY))  # written two days ago
    with pytest.raises(NotFoundError):
        api.retrieve(old.id, "alice")
    assert not path.exists()  # deleted when looked at
    stale = saved(api, "c", "d")
    os.utime(next(api.store.root.rglob(f"{stale.id}.json")), (clock.now - 2 * DAY,) * 2)
    fresh = saved(api, "e", "f")  # a save sweeps the owner's expired responses
    assert api.store.count("alice") == 1 and api.retrieve(fresh.id, "alice") == fresh


def test_the_per_key_cap_refuses_one_more_and_holds_for_each_key(api: StoredResponses) -> None:
    for i in range(3):
        saved(api, str(i), str(i))
    request = ResponsesRequest(model="m", input="x")
    with pytest.raises(PayloadTooLargeError) as error:
        api.check_room(request, "alice")
    assert error.value.code == "storage_quota_exceeded" and error.value.param == "store"
    with pytest.raises(PayloadTooLargeError):
        saved(api, "4", "4")
    api.check_room(ResponsesRequest(model="m", input="x", store=False), "alice")  # not stored: no cap
    api.check_room(request, "bob")  # another key has its own
    saved(api, "b", "b", owner="bob")


def test_the_per_key_byte_cap_refuses_a_response_that_would_pass_it(tmp_path: Path) -> None:
    api = StoredResponses(ResponseStore(tmp_path), ResponseLimits(max_bytes_per_key=4096))
    first = saved(api, "a" * 1000, "b" * 1000)
    held = api.store.held("alice")
    assert held.count == 1 and 2000 < held.bytes < 4096
    assert held.bytes == sum(p.stat().st_size for p in api.store.root.rglob("*.json"))
    api.check_room(ResponsesRequest(model="m", input="x"), "alice")  # room left: the model may run
    with pytest.raises(PayloadTooLargeError) as error:  # this one would pass the cap
        saved(api, "c" * 1000, "d" * 1000)
    assert error.value.code == "storage_quota_exceeded" and error.value.param == "store"
    assert "MiB" in error.value.message and "DELETE /v1/responses/{id}" in error.value.message
    assert api.store.held("alice").count == 1  # nothing written
    saved(api, "c" * 1000, "d" * 1000, owner="bob")  # another key has its own
    api.delete(first.id, "alice")
    saved(api, "c" * 1000, "d" * 1000)  # room again


def test_an_owner_at_its_byte_cap_is_refused_before_the_model_runs(tmp_path: Path) -> None:
    api = StoredResponses(ResponseStore(tmp_path), ResponseLimits(max_bytes_per_key=1024))
    api.store.add("resp-1", StoredResponse(response={"pad": "x" * 1100}), "alice")  # e.g. a grown answer
    with pytest.raises(PayloadTooLargeError) as error:
        api.check_room(ResponsesRequest(model="m", input="x"), "alice")
    assert error.value.code == "storage_quota_exceeded"
    api.check_room(ResponsesRequest(model="m", input="x", store=False), "alice")  # not stored: no cap


def test_the_byte_cap_comes_from_the_config() -> None:
    from maas.config import IngressConfig

    assert ResponseLimits.of(IngressConfig()).max_bytes_per_key == 1024 * 1024 * 1024
    limits = ResponseLimits.of(IngressConfig(max_stored_response_mib_per_key=2))
    assert limits.max_bytes_per_key == 2 * 1024 * 1024


def test_concurrent_saves_do_not_pass_the_cap(tmp_path: Path) -> None:
    api = StoredResponses(ResponseStore(tmp_path), ResponseLimits(max_per_key=5))
    refused: list[Exception] = []

    def save(i: int) -> None:
        try:
            saved(api, str(i), str(i))
        except PayloadTooLargeError as error:
            refused.append(error)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert api.store.count("alice") == 5 and len(refused) == 7


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "resp-\u00e9", "x" * 129, "a.json", "/etc/passwd"])
def test_ids_that_could_name_a_path_are_unknown(api: StoredResponses, tmp_path: Path, bad: str) -> None:
    (tmp_path / "x.json").write_text('{"response": {}}')
    for call in (lambda: api.retrieve(bad, "alice"), lambda: api.delete(bad, "alice"),
                 lambda: api.input_items(bad, "alice")):
        with pytest.raises(NotFoundError):
            call()
    assert (tmp_path / "x.json").exists()


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResponseStore(tmp_path)
    store.add("resp-1", StoredResponse(response={"id": "resp-1"}), "alice")

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the rename of a second write fails
    with pytest.raises(OSError):
        store.add("resp-1", StoredResponse(response={"id": "resp-1", "changed": True}), "alice")
    assert store.get("resp-1", "alice").response == {"id": "resp-1"}  # the old file, whole
    folder = next((tmp_path / "responses" / "owners").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "resp-1.json"]
    assert store.count("alice") == 1


def test_owner_folders_are_safe_names_for_any_key_id(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path)
    store.add("resp-1", StoredResponse(response={}), "../../evil")
    store.add("resp-1", StoredResponse(response={}), None)
    names = sorted(p.name for p in (tmp_path / "responses" / "owners").iterdir())
    assert names[1] == "none" and names[0].startswith("key-") and "/" not in names[0]
    assert not (tmp_path.parent / "evil").exists()
