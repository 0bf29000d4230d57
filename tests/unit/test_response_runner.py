"""The runner of a background response, with a fake application handle: queued → in_progress →
completed; a failed answer; a replica lost mid-call (sent again); a cancel that aborts the call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from deployments import detached_run, response_runner
from deployments.response_runner import BackgroundRun
from maas.endpoints.generation.protocol import ResponsesRequest
from maas.endpoints.generation.responses import new_response
from maas.endpoints.responses.api import StoredResponses
from maas.endpoints.responses.store import ResponseStore
from maas.protocol.base import UsageInfo
from maas.protocol.chat import ChatChoice, ChatCompletionResponse, ResponseMessage

OWNER = "alice"


def chat_answer(text: str) -> dict[str, Any]:
    return ChatCompletionResponse(model="m", usage=UsageInfo.of(4, 2), choices=[
        ChatChoice(index=0, message=ResponseMessage(content=text), finish_reason="stop")]).model_dump(mode="json")


class Call:
    def __init__(self, outcome: Any, hang: bool = False) -> None:
        self.outcome, self.hang, self.cancelled = outcome, hang, False

    def __await__(self) -> Any:
        return self._answer().__await__()

    async def _answer(self) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class Handle:
    """``batch_call.remote`` answers the queued outcomes in order."""

    def __init__(self, *calls: Call) -> None:
        self.calls, self.sent = list(calls), []

    @property
    def batch_call(self) -> Any:
        return self

    def remote(self, owner: str | None, url: str, body: dict[str, Any]) -> Call:
        self.sent.append((owner, url, body))
        return self.calls.pop(0)


@pytest.fixture
def queued(tmp_path: Path) -> tuple[StoredResponses, str]:
    api = StoredResponses(ResponseStore(tmp_path))
    request = ResponsesRequest(model="m", input="Hi", background=True, max_output_tokens=8)
    response = new_response(request, status="queued", store=True)
    api.queue(request, response, [], OWNER)
    return api, response.id


def run(tmp_path: Path, response_id: str, handle: Handle) -> None:
    asyncio.run(BackgroundRun(str(tmp_path), response_id, OWNER).run(lambda: handle))


def test_a_queued_response_is_answered_and_completed(tmp_path: Path, queued: tuple[StoredResponses, str]) -> None:
    api, response_id = queued
    assert api.retrieve(response_id, OWNER).status == "queued"
    handle = Handle(Call((200, chat_answer("Hello."), None)))
    run(tmp_path, response_id, handle)
    done = api.retrieve(response_id, OWNER)
    assert (done.id, done.status, done.background, done.output[0].content[0].text) == (
        response_id, "completed", True, "Hello.")
    owner, url, body = handle.sent[0]
    assert (owner, url, body["max_completion_tokens"], body["messages"][0]["content"]) == (
        OWNER, "/v1/chat/completions", 8, "Hi")


def test_a_lost_replica_is_sent_again_and_an_error_fails_it(tmp_path: Path, queued: tuple[StoredResponses, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(response_runner, "BACKOFF_S", (0.0, 0.0))
    api, response_id = queued
    error = {"error": {"message": "Too long.", "type": "invalid_request_error", "param": "messages",
                       "code": "context_length_exceeded"}}
    handle = Handle(Call(RuntimeError("replica died")), Call((503, {}, 0.0)), Call((400, error, None)))
    run(tmp_path, response_id, handle)
    failed = api.retrieve(response_id, OWNER)
    assert failed.status == "failed" and failed.error == {"code": "context_length_exceeded", "message": "Too long."}
    assert len(handle.sent) == 3


def test_a_cancel_aborts_the_call_and_the_response_stays_cancelled(
        tmp_path: Path, queued: tuple[StoredResponses, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(response_runner, "POLL_S", 0.01)
    api, response_id = queued
    call = Call(None, hang=True)

    async def cancel_later() -> None:
        runner = asyncio.ensure_future(BackgroundRun(str(tmp_path), response_id, OWNER).run(lambda: Handle(call)))
        while api.retrieve(response_id, OWNER).status != "in_progress":
            await asyncio.sleep(0.01)
        assert api.cancel(response_id, OWNER).status == "cancelled"
        await runner

    asyncio.run(cancel_later())
    assert call.cancelled and api.retrieve(response_id, OWNER).status == "cancelled"
    assert api.cancel(response_id, OWNER).status == "cancelled"  # an ended one: as it is


def test_an_ended_response_is_not_run_again(tmp_path: Path, queued: tuple[StoredResponses, str]) -> None:
    api, response_id = queued
    run(tmp_path, response_id, Handle(Call((200, chat_answer("Once."), None))))
    handle = Handle()
    run(tmp_path, response_id, handle)  # a runner started again after the end
    assert handle.sent == [] and api.retrieve(response_id, OWNER).output[0].content[0].text == "Once."


class FakeRunner:
    """A named runner actor that exists (only which ``run`` calls it gets)."""

    def __init__(self) -> None:
        self.runs = 0
        self.run = self

    def remote(self) -> None:
        self.runs += 1


def test_a_runner_of_a_queued_response_is_told_to_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``run`` sent by a replica that died while the actor started is lost with it: the next
    retrieve of a response still queued sends it again (``run`` twice is one run); one that has
    begun is left alone."""
    runner = FakeRunner()
    monkeypatch.setattr(detached_run.ray, "get_actor", lambda name, namespace: runner)
    response_runner.ensure_response_runner("maas", None, "resp-1", OWNER, queued=True)
    assert runner.runs == 1
    response_runner.ensure_response_runner("maas", None, "resp-1", OWNER, queued=False)
    assert runner.runs == 1
