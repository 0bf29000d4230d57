"""The runner of one batch: a detached Ray actor that sends the batch's requests through the
application's handle, a bounded number at a time, so a batch never takes more than its share.

It outlives the ingress replica that started it (detached), so a replica restart does not stop
it; a request cut off by a dying replica is sent again. Each finished request is appended to the
batch's results as it ends, and a runner started again (by the ingress, for a batch whose runner
is gone) skips the requests already there: every request is answered once, and the counts are
those of the results, whatever a crash left in the batch's state.

Every batch ends and its actor exits: ``completed``; ``cancelled``; ``expired`` once past its
completion window (the requests not run are in the error file, code ``batch_expired``); or
``failed`` on any error of the run itself (its input file gone, say), the reason in ``errors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import ray

from deployments.detached_run import RunsOnce, ensure_running
from maas.endpoints.batches import lines as rules
from maas.endpoints.batches.api import ACTIVE
from maas.endpoints.batches.protocol import BatchErrorData, BatchErrors, BatchObject, BatchRequestLine
from maas.endpoints.batches.store import BatchStore, FileStore
from maas.protocol.base import now as now_s
from maas.protocol.errors import EngineError, InvalidRequestError, MaasError, failure_text, unwrap

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503, 504})
"""Answers that mean "not now" (a quota, an overload, a deadline): the request is sent again."""
MAX_ATTEMPTS = 20
BACKOFF_S = (0.5, 10.0)


def runner_name(batch_id: str) -> str:
    return f"maas-batch-{batch_id}"


class BatchRun:
    """One run of a batch to its end, in plain Python (the actor below holds one; a test calls
    :meth:`run` with a fake handle). Any failure ends the batch ``failed``, its reason in ``errors``."""

    def __init__(self, batch_dir: str | None, batch_id: str, concurrency: int,
                 file_expiry_s: int | None = None, clock: Callable[[], int] = now_s) -> None:
        """``file_expiry_s``: the output and error files expire this long after the batch ends."""
        self.batch_id, self.concurrency, self.clock = batch_id, concurrency, clock
        self.file_expiry_s = file_expiry_s
        self.batches, self.files = BatchStore(batch_dir), FileStore(batch_dir)

    async def run(self, handle_of: Callable[[], Any]) -> None:
        """Run the batch; ``handle_of``: the application's handle, asked for once the input is read."""
        try:
            await self._run_batch(handle_of)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the batch must end
            logger.error("batch %s failed:\n%s", self.batch_id, failure_text(exc))
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        try:
            self.batches.update(self.batch_id, lambda b: _failed(b, _error_of(exc), self.clock()))
        except Exception as again:  # noqa: BLE001 - the batch itself is gone: nothing to mark
            logger.error("batch %s: cannot mark it failed:\n%s", self.batch_id, failure_text(again))

    async def _run_batch(self, handle_of: Callable[[], Any]) -> None:
        batch, owner = self.batches.get(self.batch_id)
        lines = rules.checked_batch_input(self._input(batch))  # checked at creation: decoded only
        done = self.batches.done_ids(self.batch_id)
        counts = self.batches.counts(self.batch_id)
        self.batches.update(self.batch_id, lambda b: _started(b, len(lines), counts, self.clock()))
        todo = iter([line for line in lines if line.custom_id not in done])
        if not self._stopping():
            handle = handle_of()
            await asyncio.gather(*(self._worker(handle, owner, todo) for _ in range(self.concurrency)))
        self._finish(lines, owner)

    def _input(self, batch: BatchObject) -> bytes:
        try:
            return self.files.content(batch.input_file_id)
        except (KeyError, OSError):
            raise InvalidRequestError(f"The input file '{batch.input_file_id}' no longer exists.",
                                      "input_file_id", code="input_file_not_found") from None

    async def _worker(self, handle: Any, owner: str | None, todo: Iterator[BatchRequestLine]) -> None:
        """Send the next request not yet taken, until none is left or the batch is cancelled or expired."""
        for line in todo:
            if self._stopping():
                return
            result = await self._answer(handle, owner, line)
            self.batches.append_result(self.batch_id, result)
            self.batches.update(self.batch_id, lambda b, ok=result.succeeded: _count(b, ok))

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

    def _stopping(self) -> bool:
        """Cancelled, past its completion window, or finalizing (a run resumed after a crash there)."""
        batch = self.batches.get(self.batch_id)[0]
        return batch.status in ("cancelling", "finalizing") or self._expired(batch)

    def _expired(self, batch: BatchObject) -> bool:
        return batch.expires_at is not None and batch.expires_at <= self.clock()

    def _finish(self, lines: list[BatchRequestLine], owner: str | None) -> None:
        batch = self.batches.update(self.batch_id,
                                    lambda b: setattr(b, "finalizing_at", b.finalizing_at or self.clock()))
        expired = batch.status != "cancelling" and self._expired(batch)
        results = list(self.batches.results(self.batch_id))
        if expired:  # OpenAI: the requests not run are reported in the error file as expired
            ran = {r.custom_id for r in results}
            results += [rules.expired(line.custom_id) for line in lines if line.custom_id not in ran]
        output, errors = rules.output_files(lines, results)
        expires_at = self.clock() + self.file_expiry_s if self.file_expiry_s else None
        output_id = self.files.create(output.encode(), f"{self.batch_id}_output.jsonl", "batch_output", owner,
                                      expires_at).id
        error_id = self.files.create(errors.encode(), f"{self.batch_id}_error.jsonl", "batch_output", owner,
                                     expires_at).id if errors else None
        counts = self.batches.counts(self.batch_id)
        batch = self.batches.update(self.batch_id, lambda b: _finished(b, output_id, error_id, counts, expired,
                                                                        self.clock()))
        logger.info("batch %s %s: %s", self.batch_id, batch.status, batch.request_counts)


@ray.remote(num_cpus=0, max_restarts=0)
class BatchRunner(RunsOnce):
    """Runs one batch to its end (see the module doc) and exits, whatever the end; ``run`` twice
    is one run."""

    def __init__(self, app_name: str, batch_dir: str | None, batch_id: str, concurrency: int,
                 file_expiry_s: int | None = None) -> None:
        super().__init__(app_name, BatchRun(batch_dir, batch_id, concurrency, file_expiry_s))


def _started(batch: BatchObject, total: int, counts: tuple[int, int], at: int) -> None:
    """In progress, its counts those of the results so far (a resumed run's included)."""
    if batch.status == "validating":
        batch.status, batch.in_progress_at = "in_progress", at
    batch.request_counts.total = total
    batch.request_counts.completed, batch.request_counts.failed = counts


def _count(batch: BatchObject, ok: bool) -> None:
    if ok:
        batch.request_counts.completed += 1
    else:
        batch.request_counts.failed += 1


def _finished(batch: BatchObject, output_id: str, error_id: str | None, counts: tuple[int, int],
              expired: bool, at: int) -> None:
    batch.output_file_id, batch.error_file_id = output_id, error_id
    batch.request_counts.completed, batch.request_counts.failed = counts
    if batch.status == "cancelling":
        batch.status, batch.cancelled_at = "cancelled", at
    elif expired:
        batch.status, batch.expired_at = "expired", at
    else:
        batch.status, batch.completed_at = "completed", at


def _failed(batch: BatchObject, error: BatchErrorData, at: int) -> None:
    if batch.status in ACTIVE:
        batch.status, batch.failed_at = "failed", at
        batch.errors = BatchErrors(data=[error])


def _error_of(exc: Exception) -> BatchErrorData:
    """The ``errors`` entry of a failed batch: a maas error as it is; another by its type only
    (its message may hold a path or a client's text)."""
    error = unwrap(exc)
    if isinstance(error, MaasError):
        return BatchErrorData(code=error.code or error.error_type, message=error.message, param=error.param)
    return BatchErrorData(code="batch_failed", message=f"The batch's runner failed ({type(error).__name__}).")


def ensure_runner(app_name: str, batch_dir: str | None, batch: BatchObject, concurrency: int,
                  file_expiry_s: int | None = None) -> None:
    """Start the batch's runner unless it runs; one whose batch is still ``validating`` is told to
    run again (:func:`deployments.detached_run.ensure_running`)."""
    if batch.status in ACTIVE:
        ensure_running(BatchRunner, runner_name(batch.id), batch.status != "validating",
                       app_name, batch_dir, batch.id, concurrency, file_expiry_s)
