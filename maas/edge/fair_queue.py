"""The waiting line of :mod:`maas.edge.fair_share`: units of work in flight per tenant, under a
limit per tenant and a capacity shared by all, started fairest tenant first.

Plain Python and asyncio (no Serve, no HTTP), so its order and its bounds are tested alone.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

DEFAULT_HOLD_S = 1.0
"""The ``Retry-After`` of a tenant with no finished turn yet."""
HOLD_WEIGHT = 0.2
"""Weight of the newest turn in a tenant's average time per turn."""


class Overloaded(Exception):
    """A tenant's work cannot start: over its limit (or the queue's capacity is taken) past the
    wait, or its line is full."""

    def __init__(self, in_flight: int, limit: int, busy: bool, full: bool, retry_after_s: float) -> None:
        super().__init__(f"{in_flight} in flight (limit {limit})" + (", capacity taken" if busy else ""))
        self.in_flight, self.limit = in_flight, limit
        self.busy, self.full, self.retry_after_s = busy, full, retry_after_s


@dataclass
class _Waiter:
    tenant: str
    units: int
    future: asyncio.Future[None]
    granted_at: float | None = None


@dataclass
class _Tenant:
    limit: int
    in_flight: int = 0
    line: deque[_Waiter] = field(default_factory=deque)
    served: int = 0
    hold_s: float = DEFAULT_HOLD_S


class FairQueue:
    """Units of work (requests, or sequences) in flight per tenant, under each tenant's ``limit`` and
    a ``capacity`` shared by all (None: no shared bound).

    Work that does not fit waits in its tenant's line (first in, first out); the lines are served
    least in flight first, ties to the tenant served longest ago, and nobody overtakes the fairest
    line while it waits for room. A tenant with nothing in flight may start one piece of work larger
    than its limit, and the queue when empty one larger than its capacity, so that no work is
    refused only for its size. Thread-safe; the waiting is asyncio.
    """

    def __init__(self, capacity: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}
        self._total = 0
        self._turns = itertools.count(1)

    def in_flight(self, tenant: str | None = None) -> int:
        """Units in flight: of ``tenant``, or of all."""
        with self._lock:
            if tenant is None:
                return self._total
            state = self._tenants.get(tenant)
            return state.in_flight if state else 0

    def waiting(self, tenant: str) -> int:
        """Pieces of work of ``tenant`` waiting for their turn."""
        with self._lock:
            state = self._tenants.get(tenant)
            return len(state.line) if state else 0

    def try_acquire(self, tenant: str, units: int, limit: int) -> Lease | None:
        """A lease if the work may start now (and none of the tenant's waits before it), else None."""
        waiter = self._enqueue(tenant, units, limit, asyncio.get_running_loop().create_future(), None)
        if self._give_up(waiter, full=False) is not None:
            return None
        return Lease(self, waiter)

    async def acquire(self, tenant: str, units: int, limit: int, wait_s: float | None,
                      max_waiting: int | None = None,
                      keep_waiting: Callable[[], bool] = lambda: False) -> Lease:
        """Wait for ``units`` of ``tenant`` to fit, at most ``wait_s`` (None: no bound) unless
        ``keep_waiting()`` says so when that time is up; :class:`Overloaded` past it, or at once
        when ``max_waiting`` of its work already waits. Cancelled, it leaves the line."""
        waiter = self._enqueue(tenant, units, limit, asyncio.get_running_loop().create_future(), max_waiting)
        try:
            await self._granted(waiter, wait_s, keep_waiting)
        except BaseException:
            if self._give_up(waiter, full=False) is None:  # granted meanwhile: give it back
                Lease(self, waiter).release()
            raise
        refusal = self._give_up(waiter, full=False)
        if refusal is not None:
            raise refusal
        return Lease(self, waiter)

    async def _granted(self, waiter: _Waiter, wait_s: float | None, keep_waiting: Callable[[], bool]) -> None:
        timeout = wait_s
        while not waiter.future.done():
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
            if not done and not keep_waiting():
                return
            timeout = None

    def _enqueue(self, tenant: str, units: int, limit: int, future: asyncio.Future[None],
                 max_waiting: int | None) -> _Waiter:
        waiter = _Waiter(tenant, units, future)
        with self._lock:
            state = self._tenants.setdefault(tenant, _Tenant(limit))
            state.limit = limit  # the key file may have changed it
            state.line.append(waiter)
            self._dispatch()
            if waiter.granted_at is None and max_waiting is not None and len(state.line) > max_waiting:
                raise self._leave(waiter, full=True)
        return waiter

    def _give_up(self, waiter: _Waiter, full: bool) -> Overloaded | None:
        """None if ``waiter`` was granted (its units are held); else it leaves its line, and why."""
        with self._lock:
            return None if waiter.granted_at is not None else self._leave(waiter, full)

    def _leave(self, waiter: _Waiter, full: bool) -> Overloaded:
        """Take a waiter out of its line (the lock is held); what held it back."""
        state = self._tenants[waiter.tenant]
        refusal = Overloaded(state.in_flight, state.limit, not self._fits_capacity(waiter.units), full,
                             max(DEFAULT_HOLD_S, state.hold_s))
        state.line.remove(waiter)
        self._dispatch()  # the next in its line may fit now
        self._forget_if_idle(waiter.tenant)
        return refusal

    def _release(self, waiter: _Waiter) -> None:
        with self._lock:
            state = self._tenants[waiter.tenant]
            state.in_flight -= waiter.units
            self._total -= waiter.units
            held = self._clock() - (waiter.granted_at or 0.0)
            state.hold_s += HOLD_WEIGHT * (held - state.hold_s)
            self._dispatch()
            self._forget_if_idle(waiter.tenant)

    def _dispatch(self) -> None:
        """Start waiting work, fairest tenant first, while it fits (the lock is held)."""
        while True:
            fairest: _Tenant | None = None
            for state in self._tenants.values():
                if state.line and self._fits_tenant(state) and (
                        fairest is None or (state.in_flight, state.served) < (fairest.in_flight, fairest.served)):
                    fairest = state
            if fairest is None or not self._fits_capacity(fairest.line[0].units):
                return  # nothing may start, or the fairest waits for room: nobody overtakes it
            self._grant(fairest)

    def _fits_tenant(self, state: _Tenant) -> bool:
        return state.in_flight == 0 or state.in_flight + state.line[0].units <= state.limit

    def _fits_capacity(self, units: int) -> bool:
        return self.capacity is None or self._total == 0 or self._total + units <= self.capacity

    def _grant(self, state: _Tenant) -> None:
        waiter = state.line.popleft()
        state.in_flight += waiter.units
        state.served = next(self._turns)
        self._total += waiter.units
        waiter.granted_at = self._clock()
        _wake(waiter.future)

    def _forget_if_idle(self, tenant: str) -> None:
        state = self._tenants.get(tenant)
        if state is not None and state.in_flight == 0 and not state.line:
            del self._tenants[tenant]


def _wake(future: asyncio.Future[None]) -> None:
    """Resolve a waiter's future from any thread (its loop may be gone: then nobody waits)."""
    def resolve() -> None:
        if not future.done():
            future.set_result(None)
    try:
        future.get_loop().call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed
        pass


class Lease:
    """Units held in a :class:`FairQueue`; :meth:`release` gives them back (once, from any thread)."""

    def __init__(self, queue: FairQueue, waiter: _Waiter) -> None:
        self._queue, self._waiter = queue, waiter
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._queue._release(self._waiter)

    def release_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release on ``loop`` (from a finalizer, which may run in any thread at any point)."""
        try:
            loop.call_soon_threadsafe(self.release)
        except RuntimeError:  # the loop is closed: nothing waits for these units any more
            pass


def released_after(items: AsyncIterator[T], lease: Lease | None) -> AsyncIterator[T]:
    """``items``, releasing ``lease`` when they end or are closed, or once the iterator is dropped
    without ever being started (a response that never began)."""
    if lease is None:
        return items
    wrapper = _release_at_end(items, lease)
    weakref.finalize(wrapper, lease.release_soon, asyncio.get_running_loop())
    return wrapper


async def _release_at_end(items: AsyncIterator[T], lease: Lease) -> AsyncIterator[T]:
    try:
        async for item in items:
            yield item
    finally:
        lease.release()
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
