"""The runner of one background response: a detached Ray actor that answers it through the
application's handle, the way a batch's runner answers a batch line (``batch_call``: admitted and
charged to the response's API key, in its fair share), and records the outcome in the store.

It outlives the ingress replica that started it (detached); a call cut off by a dying replica is
sent again, and a runner that is gone is started again by the ingress when the response is next
retrieved. ``queued`` → ``in_progress`` → ``completed`` / ``incomplete`` / ``failed``; a cancel
(``POST /v1/responses/{id}/cancel``) sets ``cancelled`` in the store, which the runner sees within
``POLL_S``: it cancels its call (the generation is aborted) and records nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import ray

from deployments.detached_run import RunsOnce, ensure_running
from maas.endpoints.generation.protocol import ResponsesRequest
from maas.endpoints.generation.responses import chat_request, response_from_chat
from maas.endpoints.responses.api import RUNNING, parse_items
from maas.endpoints.responses.store import ResponseStore, StoredResponse
from maas.protocol.chat import ChatCompletionResponse
from maas.protocol.errors import failure_text

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503, 504})
MAX_ATTEMPTS = 20
BACKOFF_S = (0.5, 10.0)
POLL_S = 0.5


def runner_name(response_id: str) -> str:
    return f"maas-response-{response_id}"


class BackgroundRun:
    """One run of a background response to its end, in plain Python (the actor below holds one;
    a test calls :meth:`run` with a fake handle)."""

    def __init__(self, batch_dir: str | None, response_id: str, owner: str | None) -> None:
        self.store = ResponseStore(batch_dir)
        self.response_id, self.owner = response_id, owner

    async def run(self, handle_of: Callable[[], Any]) -> None:
        try:
            stored = self.store.get(self.response_id, self.owner)
            if stored.response.get("status") not in RUNNING or stored.request is None:
                return
            self._set(lambda s: s.response.update(status="in_progress"))
            await self._answer(handle_of(), stored)
        except KeyError:  # deleted meanwhile: nothing to record
            return
        except Exception as exc:  # noqa: BLE001 - whatever it is, the response must end
            logger.error("background response failed:\n%s", failure_text(exc))
            self._fail({"code": "server_error", "message": f"The response's run failed ({type(exc).__name__})."})

    async def _answer(self, handle: Any, stored: StoredResponse) -> None:
        request = ResponsesRequest.model_validate(stored.request)
        chat = chat_request(request, parse_items(stored.context)).model_dump(mode="json", exclude_none=True)
        wait, last = BACKOFF_S[0], "no attempt"
        for _ in range(MAX_ATTEMPTS):
            outcome = await self._call(handle.batch_call.remote(self.owner, "/v1/chat/completions", chat))
            if outcome is None:  # cancelled
                return
            if isinstance(outcome, BaseException):
                last, retry_after = type(outcome).__name__, None
            else:
                status, body, retry_after = outcome
                if status not in RETRY_STATUSES:
                    return self._record(request, stored, status, body)
                last = f"HTTP {status}"
            await asyncio.sleep(retry_after or wait)
            wait = min(wait * 2, BACKOFF_S[1])
        self._fail({"code": "server_error", "message": f"No answer after {MAX_ATTEMPTS} attempts ({last})."})

    async def _call(self, call: Any) -> Any:
        """The call's outcome (its exception if it failed); None once the response is cancelled
        (the call is cancelled then)."""
        task = asyncio.ensure_future(_outcome(call))
        while not task.done():
            await asyncio.wait({task}, timeout=POLL_S)
            if not task.done() and self._cancelled():
                call.cancel()
                task.cancel()
                return None
        return task.result()

    def _cancelled(self) -> bool:
        try:
            return self.store.get(self.response_id, self.owner).response.get("status") == "cancelled"
        except KeyError:
            return True  # deleted: stop too

    def _record(self, request: ResponsesRequest, stored: StoredResponse, status: int, body: dict[str, Any]) -> None:
        if status != 200:
            error = body.get("error", {})
            return self._fail({"code": error.get("code") or "server_error", "message": error.get("message", "")})
        response = response_from_chat(request, ChatCompletionResponse.model_validate(body), store=True)
        answer = response.model_dump(mode="json")
        answer.update(id=self.response_id, created_at=stored.response["created_at"], background=True)
        self._set(lambda s: s.response.update(answer))

    def _fail(self, error: dict[str, Any]) -> None:
        self._set(lambda s: s.response.update(status="failed", error=error))

    def _set(self, change: Callable[[StoredResponse], None]) -> None:
        """Apply ``change`` unless the response has ended meanwhile (cancelled)."""
        def unless_ended(stored: StoredResponse) -> None:
            if stored.response.get("status") in RUNNING:
                change(stored)

        try:
            self.store.update(self.response_id, self.owner, unless_ended)
        except KeyError:
            pass  # deleted meanwhile


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - a replica died or restarted: the caller sends it again
        return exc


@ray.remote(num_cpus=0, max_restarts=0)
class ResponseRunner(RunsOnce):
    """Runs one background response to its end and exits; ``run`` twice is one run."""

    def __init__(self, app_name: str, batch_dir: str | None, response_id: str, owner: str | None) -> None:
        super().__init__(app_name, BackgroundRun(batch_dir, response_id, owner))


def ensure_response_runner(app_name: str, batch_dir: str | None, response_id: str, owner: str | None,
                           queued: bool = True) -> None:
    """Start the response's runner unless it runs; one whose response is still ``queued`` is told
    to run again (:func:`deployments.detached_run.ensure_running`)."""
    ensure_running(ResponseRunner, runner_name(response_id), not queued, app_name, batch_dir, response_id, owner)
