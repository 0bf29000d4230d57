"""The runner of one batch: a detached Ray actor that sends the batch's requests through the
application's handle, a bounded number at a time, so a batch never takes more than its share.

It outlives the ingress replica that started it (detached), so a replica restart does not stop
it; a request cut off by a dying replica is sent again. Each finished request is appended to the
batch's results as it ends, and a runner started again (by the ingress, for a batch whose runner
is gone) skips the requests already there: every request is answered once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import ray

from maas.endpoints import batches as rules
from maas.storage.batch_store import BatchStore, FileStore
from maas.wire.batch_schemas import BatchObject, BatchRequestLine
from maas.wire.errors import EngineError
from maas.wire.schemas import now as now_s

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503, 504})
"""Answers that mean "not now" (a quota, an overload, a deadline): the request is sent again."""
MAX_ATTEMPTS = 20
BACKOFF_S = (0.5, 10.0)


def runner_name(batch_id: str) -> str:
    return f"maas-batch-{batch_id}"


@ray.remote(num_cpus=0, max_restarts=0)
class BatchRunner:
    """Runs one batch to its end (see the module doc); ``run`` twice is one run."""

    def __init__(self, app_name: str, batch_dir: str | None, batch_id: str, concurrency: int) -> None:
        self.app_name, self.batch_id, self.concurrency = app_name, batch_id, concurrency
        self.batches, self.files = BatchStore(batch_dir), FileStore(batch_dir)
        self._run: asyncio.Task[None] | None = None

    async def run(self) -> None:
        if self._run is None:
            self._run = asyncio.ensure_future(self._run_batch())
        await asyncio.shield(self._run)
        ray.actor.exit_actor()

    async def _run_batch(self) -> None:
        from ray import serve

        batch, owner = self.batches.get(self.batch_id)
        lines = rules.read_batch_input(self.files.content(batch.input_file_id), batch.endpoint)
        done = self.batches.done_ids(self.batch_id)
        self.batches.update(self.batch_id, lambda b: _started(b, len(lines)))
        handle = serve.get_app_handle(self.app_name)
        todo = iter([line for line in lines if line.custom_id not in done])
        await asyncio.gather(*(self._worker(handle, owner, todo) for _ in range(self.concurrency)))
        self._finish(lines, owner)

    async def _worker(self, handle: Any, owner: str | None, todo: Iterator[BatchRequestLine]) -> None:
        """Send the next request not yet taken, until none is left or the batch is cancelled."""
        for line in todo:
            if self._cancelled():
                return
            result = await self._answer(handle, owner, line)
            self.batches.append_result(self.batch_id, result)
            ok = result.response is not None and result.response.status_code == 200
            self.batches.update(self.batch_id, lambda b, ok=ok: _count(b, ok))

    async def _answer(self, handle: Any, owner: str | None, line: BatchRequestLine) -> Any:
        """The request's answer, sending it again while the service says "not now" or a replica fails."""
        wait, last = BACKOFF_S[0], "no attempt"
        for _ in range(MAX_ATTEMPTS):
            try:
                status, body, retry_after = await handle.batch_call.remote(owner, line.url, line.body)
            except Exception as exc:  # noqa: BLE001 - a replica died or restarted: send it again
                last, retry_after = f"{type(exc).__name__}", None
            else:
                if status not in RETRY_STATUSES:
                    return rules.answered(line.custom_id, status, body)
                last = f"HTTP {status}"
            await asyncio.sleep(retry_after or wait)
            wait = min(wait * 2, BACKOFF_S[1])
        return rules.failed(line.custom_id, EngineError(f"No answer after {MAX_ATTEMPTS} attempts ({last})."))

    def _cancelled(self) -> bool:
        return self.batches.get(self.batch_id)[0].status == "cancelling"

    def _finish(self, lines: list[BatchRequestLine], owner: str | None) -> None:
        self.batches.update(self.batch_id, lambda b: setattr(b, "finalizing_at", now_s()))
        output, errors = rules.output_files(lines, self.batches.results(self.batch_id))
        output_id = self.files.create(output.encode(), f"{self.batch_id}_output.jsonl", "batch_output", owner).id
        error_id = self.files.create(errors.encode(), f"{self.batch_id}_error.jsonl", "batch_output", owner).id \
            if errors else None
        self.batches.update(self.batch_id, lambda b: _finished(b, output_id, error_id))
        logger.info("batch %s finished: %s", self.batch_id, self.batches.get(self.batch_id)[0].request_counts)


def _started(batch: BatchObject, total: int) -> None:
    if batch.status == "validating":
        batch.status, batch.in_progress_at = "in_progress", now_s()
    batch.request_counts.total = total


def _count(batch: BatchObject, ok: bool) -> None:
    if ok:
        batch.request_counts.completed += 1
    else:
        batch.request_counts.failed += 1


def _finished(batch: BatchObject, output_id: str, error_id: str | None) -> None:
    batch.output_file_id, batch.error_file_id = output_id, error_id
    if batch.status == "cancelling":
        batch.status, batch.cancelled_at = "cancelled", now_s()
    else:
        batch.status, batch.completed_at = "completed", now_s()


def ensure_runner(app_name: str, batch_dir: str | None, batch: BatchObject, concurrency: int) -> None:
    """Start the batch's runner unless it runs (once per batch across replicas: a named actor)."""
    if batch.status not in ("validating", "in_progress", "cancelling"):
        return
    try:
        ray.get_actor(runner_name(batch.id), namespace="serve")
        return
    except ValueError:
        pass  # none: a new batch, or its runner was lost
    runner = BatchRunner.options(name=runner_name(batch.id), lifetime="detached", get_if_exists=True,
                                 namespace="serve").remote(app_name, batch_dir, batch.id, concurrency)
    runner.run.remote()
