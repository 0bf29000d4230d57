"""Coalesce concurrent calls for the same key into one downstream call.

Each request to ``/v1/classify`` or ``/v1/embeddings`` used to be one call from the ingress to
the model's deployment: one Ray hop (serialization, routing, a task on the replica) per HTTP
request. :class:`Coalescer` makes it one hop per *batch*: calls for the same key (the model)
that arrive while that key's downstream calls are in flight wait, and are sent together as one
call when a slot frees up; the results are split back to the callers.

- A call arriving when a slot is free goes at once: no added latency at low load.
- At most ``max_in_flight`` downstream calls per key run at a time; at most ``max_batch``
  items go in one call (a caller's items are never split; a caller with more items than
  ``max_batch`` is sent alone).
- ``max_pending``: callers of a key that may wait for a slot; one more is refused at once
  with ``overloaded()`` (what the deployment's ``max_queued_requests`` did before).
- A failed downstream call that carried several callers is retried once per caller
  (``isolate_errors``), so an error (a bad input, a limit) reaches only the caller it
  belongs to.
- A caller that is cancelled leaves: if its call has not been sent it is dropped; if it has,
  the others in that call still get their results, and the downstream call is cancelled only
  when every caller in it is gone.
- Downstream calls run in a fresh :mod:`contextvars` context, not in the first caller's:
  Ray Serve ties a handle call to the request in whose context it is made and cancels it when
  that request is cancelled, which would fail every other caller of a shared call.

Plain asyncio, no Ray: unit-tested in ``tests/unit/test_coalesce.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
In = TypeVar("In")
Out = TypeVar("Out")

COALESCE_IN_FLIGHT = 2
"""Downstream calls per model and replica the ingress keeps in flight: one running while the
next gathers."""

Downstream = Callable[[K, list[In]], Awaitable[Sequence[Out]]]


@dataclass(eq=False)
class _Waiter(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]


@dataclass(eq=False)
class _Batch(Generic[In, Out]):
    waiters: list[_Waiter[In, Out]]
    task: asyncio.Task[None] | None = None

    def abandoned(self) -> bool:
        return all(w.future.cancelled() for w in self.waiters)


@dataclass
class _KeyState(Generic[In, Out]):
    pending: list[_Waiter[In, Out]] = field(default_factory=list)
    in_flight: set[_Batch[In, Out]] = field(default_factory=set)


class Coalescer(Generic[K, In, Out]):
    """``await coalescer.submit(key, items)``: ``call(key, items)`` for many callers at once.

    ``call(key, items)`` must return one output per item, in order.
    """

    def __init__(self, call: Downstream[K, In, Out], max_batch: int = 32, max_in_flight: int = 2,
                 isolate_errors: bool = True, fresh_context: bool = True, max_pending: int | None = None,
                 overloaded: Callable[[], Exception] | None = None) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.call = call
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.isolate_errors = isolate_errors
        self.fresh_context = fresh_context
        self.max_pending = max_pending
        self.overloaded = overloaded or (lambda: RuntimeError("too many calls waiting"))
        self._keys: dict[K, _KeyState[In, Out]] = {}
        self.calls = 0
        """Downstream calls made (batches and isolated retries), for tests and metrics."""

    async def submit(self, key: K, items: Sequence[In]) -> list[Out]:
        """The outputs of ``items`` (one per item), from a downstream call shared with others."""
        items = list(items)
        if not items:
            return []
        state = self._keys.setdefault(key, _KeyState())
        if (self.max_pending is not None and len(state.pending) >= self.max_pending
                and len(state.in_flight) >= self.max_in_flight):
            raise self.overloaded()  # the bound of the downstream's own queue, kept here
        waiter: _Waiter[In, Out] = _Waiter(items, asyncio.get_running_loop().create_future())
        state.pending.append(waiter)
        self._dispatch(key, state)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            waiter.future.cancel()
            self._forget(key, state, waiter)
            raise

    def pending(self, key: K) -> int:
        """Callers of ``key`` waiting for a free slot (not yet sent)."""
        state = self._keys.get(key)
        return len(state.pending) if state else 0

    # ------------------------------------------------------------------ internals

    def _forget(self, key: K, state: _KeyState[In, Out], waiter: _Waiter[In, Out]) -> None:
        if waiter in state.pending:
            state.pending.remove(waiter)
        for batch in list(state.in_flight):
            if waiter in batch.waiters and batch.abandoned() and batch.task is not None:
                batch.task.cancel()  # nobody is left to read its result
        self._drop_if_idle(key, state)

    def _drop_if_idle(self, key: K, state: _KeyState[In, Out]) -> None:
        if not state.pending and not state.in_flight and self._keys.get(key) is state:
            del self._keys[key]

    def _dispatch(self, key: K, state: _KeyState[In, Out]) -> None:
        while state.pending and len(state.in_flight) < self.max_in_flight:
            batch = _Batch(self._take(state))
            state.in_flight.add(batch)
            coro = self._run(key, state, batch)
            context = contextvars.Context() if self.fresh_context else None
            batch.task = asyncio.get_running_loop().create_task(coro, context=context)

    def _take(self, state: _KeyState[In, Out]) -> list[_Waiter[In, Out]]:
        """The next callers to send: the oldest first, up to ``max_batch`` items."""
        taken: list[_Waiter[In, Out]] = []
        size = 0
        while state.pending:
            waiter = state.pending[0]
            if taken and size + len(waiter.items) > self.max_batch:
                break
            taken.append(state.pending.pop(0))
            size += len(waiter.items)
        return taken

    async def _run(self, key: K, state: _KeyState[In, Out], batch: _Batch[In, Out]) -> None:
        try:
            live = [w for w in batch.waiters if not w.future.done()]
            if live:
                await self._send(key, live)
        except asyncio.CancelledError:
            for waiter in batch.waiters:
                if not waiter.future.done():
                    waiter.future.cancel()
        finally:
            state.in_flight.discard(batch)
            if self._keys.get(key) is state:
                self._dispatch(key, state)
                self._drop_if_idle(key, state)

    async def _send(self, key: K, waiters: list[_Waiter[In, Out]]) -> None:
        items = [item for w in waiters for item in w.items]
        self.calls += 1
        try:
            outputs = list(await self.call(key, items))
            if len(outputs) != len(items):
                raise RuntimeError(f"downstream returned {len(outputs)} outputs for {len(items)} inputs")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets its own outcome below
            if self.isolate_errors and len(waiters) > 1:
                await asyncio.gather(*(self._send(key, [w]) for w in waiters if not w.future.done()))
                return
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            return
        start = 0
        for waiter in waiters:
            end = start + len(waiter.items)
            if not waiter.future.done():
                waiter.future.set_result(outputs[start:end])
            start = end


def coalescing(config: Any) -> dict[str, Any]:
    """The :class:`Coalescer` settings of the ingress for a batched deployment's config
    (``ClassifierConfig`` / ``EncoderConfig``): calls as big as one request may be, two in
    flight per replica, and the deployment's ``max_queued_requests`` as the bound of waiting
    callers (a 503 beyond it, as Serve's own queue bound gave)."""
    from maas.protocol.errors import ServiceUnavailableError

    deployment = config.deployment
    replicas = deployment.autoscaling.max_replicas if deployment.autoscaling else deployment.num_replicas
    queued = deployment.max_queued_requests
    return {"max_batch": config.batching.max_inputs_per_request,
            "max_in_flight": COALESCE_IN_FLIGHT * replicas,
            "max_pending": None if queued < 0 else queued,
            "overloaded": lambda: ServiceUnavailableError("The model is overloaded; retry shortly.")}
