"""Scale to zero, seen from the ingress: which deployments may run no replica, whether they run one
now, and a request's bounded wait for the first replica.

**The problem.** A deployment with ``autoscaling.min_replicas: 0`` has no replica after a quiet
while. Serve starts one when a request reaches its handle, and the request waits in the handle
until the replica runs: minutes for a generator, with no bound but the request deadline. The
ingress's own checks must not take such a deployment for dead either: a ``ping`` into it from
``/health`` would wake it (and time out while it starts), and ``/v1/models`` should say ``cold``.

**The mechanism.** :class:`ReplicaCounts` keeps each deployment's running replicas and Serve status
as Serve's controller last reported them, read at most every ``replica_status_refresh_s`` and only
when asked: by ``/v1/models``, ``/health`` or a request for such a deployment (so one request
per period pays one controller call, and none without a scale-to-zero deployment).
:meth:`ColdStarts.ready` runs before a call into a deployment that may scale to zero: when the
read says a replica runs, it returns at once; otherwise one *wake* call per deployment (its ``ping``, issued outside any request's context,
so no client leaving cancels it for the others) brings a replica up, and every request that finds
the deployment cold waits for that wake, each at most the deployment's ``cold_start_timeout_s``
from its own arrival. Past it: :class:`~maas.protocol.errors.ColdStartTimeoutError` (503,
``Retry-After``: the rest of the last observed cold start), while the wake goes on, so a retry
finds the replica. Requests waiting here hold no fair-share sequence slot (the wait is before the
fair share's turn), so a cold start never spends a tenant's ``max_wait_s``.

**The guarantees and the gap.** A request is never refused only because its deployment is at zero;
the first one after idle is answered once the replica runs (within the bound). The counts can be
up to one refresh period old (or older while the controller does not answer): a request that
arrives just after Serve stopped the last replica, before the next read, goes straight to the handle, wakes the deployment there and is answered, but
bounded only by the request deadline (``ingress.request_timeout_s``), not ``cold_start_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from maas.config import AppConfig
from maas.protocol.errors import ColdStartTimeoutError

UNHEALTHY_STATUSES = frozenset({"UNHEALTHY", "DEPLOY_FAILED"})
"""Serve deployment statuses that mean failing, not merely starting or scaled to zero."""
READ_WAIT_S = 2.0
"""The most a caller waits for a read of Serve's states (a busy controller); then it uses the last."""
OVERRUN_RETRY_S = 5.0
"""``Retry-After`` once a cold start has taken longer than the last one did."""


@dataclass(frozen=True)
class DeploymentState:
    """One deployment as Serve's controller reports it: replicas RUNNING and its status."""

    running: int
    status: str = "HEALTHY"


Reader = Callable[[], dict[str, DeploymentState]]


def zero_scaled(config: AppConfig) -> dict[str, float]:
    """``cold_start_timeout_s`` of every deployment that may scale to zero, by deployment name."""
    return {name: options.cold_start_timeout_s for name, options in config.deployments().items()
            if options.scales_to_zero()}


def serve_reader(app_name: str | None = None) -> Reader:
    """A reader of one application's deployments (None: the calling replica's own application)
    from Serve's controller (``serve.status()``, blocking: :class:`ReplicaCounts` runs it in a thread)."""

    def read() -> dict[str, DeploymentState]:
        from ray import serve

        name = app_name or serve.get_replica_context().app_name
        app = serve.status().applications.get(name)
        if app is None:
            return {}
        return {name: DeploymentState(int(dep.replica_states.get("RUNNING", 0)), _text(dep.status))
                for name, dep in app.deployments.items()}

    return read


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


class ReplicaCounts:
    """The deployments' states from the last read, read again when older than ``max_age_s`` and
    asked; concurrent refreshes share one read."""

    def __init__(self, read: Reader, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self.max_age_s = max_age_s
        self._clock = clock
        self._states: dict[str, DeploymentState] = {}
        self._read_at = -math.inf
        self._refreshing: asyncio.Future[None] | None = None
        self._lock = threading.Lock()

    def state(self, deployment: str) -> DeploymentState | None:
        """The last known state of ``deployment`` (None: never read, or not in the application)."""
        with self._lock:
            return self._states.get(deployment)

    def running(self, deployment: str) -> int | None:
        state = self.state(deployment)
        return None if state is None else state.running

    def mark_running(self, deployment: str) -> None:
        """A call was just answered by ``deployment``: it has a replica, whatever the last read said."""
        with self._lock:
            old = self._states.get(deployment) or DeploymentState(0)
            self._states[deployment] = DeploymentState(max(1, old.running), old.status)

    def stale(self) -> bool:
        return self._clock() - self._read_at >= self.max_age_s

    async def refresh(self) -> None:
        """Read the states again if the last read is stale (a failed read keeps the old ones; a
        read slower than :data:`READ_WAIT_S` is not waited for, and lands for the next caller)."""
        if not self.stale():
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._refreshing), READ_WAIT_S)

    async def _refresh(self) -> None:
        try:
            states = await asyncio.to_thread(self._read)
        except Exception:  # noqa: BLE001 - Serve's controller busy or restarting: keep the last read
            states = None
        with self._lock:
            if states is not None:
                self._states = dict(states)
            self._read_at = self._clock()


class ColdStarts:
    """The ingress's view of its scale-to-zero deployments (``timeouts``: each one's
    ``cold_start_timeout_s``) and the requests waiting for their first replica."""

    def __init__(self, timeouts: dict[str, float], counts: ReplicaCounts,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeouts = dict(timeouts)
        self.counts = counts
        self._clock = clock
        self._wakes: dict[str, asyncio.Future[None]] = {}
        self._woken_at: dict[str, float] = {}
        self.last_cold_start_s: dict[str, float] = {}
        """How long each deployment's last wake took (its observed cold start), for ``Retry-After``."""

    def scales_to_zero(self, deployment: str) -> bool:
        return deployment in self.timeouts

    def is_cold(self, deployment: str) -> bool:
        """Whether ``deployment`` may scale to zero and ran no replica at the last read."""
        return self.scales_to_zero(deployment) and self.counts.running(deployment) == 0

    async def refreshed(self) -> None:
        """Serve's states read again if stale (no controller call without a scale-to-zero deployment)."""
        if self.timeouts:
            await self.counts.refresh()

    async def ready(self, deployment: str, wake: Callable[[], Awaitable[Any]], model: str) -> None:
        """Return once ``deployment`` has a replica (at once when the last read says so); a cold one
        is woken by ``wake()`` (shared by every request that waits) within its bound."""
        if not self.scales_to_zero(deployment):
            return
        await self.counts.refresh()  # the first request after a quiet while reads afresh
        if (self.counts.running(deployment) or 0) > 0:
            return
        waiting = self._wakes.get(deployment)
        if waiting is None or waiting.done():
            waiting = self._start_wake(deployment, wake)
        bound = self.timeouts[deployment]
        try:
            await asyncio.wait_for(asyncio.shield(waiting), bound)
        except TimeoutError:
            raise ColdStartTimeoutError(
                f"The model '{model}' had no replica running (scaled to zero) and none started within "
                f"{bound:g} s; one is still starting. Please retry shortly.",
                retry_after_s=self.retry_after_s(deployment)) from None

    def retry_after_s(self, deployment: str) -> float:
        """The rest of the expected cold start: the last one observed (else the bound) minus the
        time the current wake has run; :data:`OVERRUN_RETRY_S` once past it."""
        expected = self.last_cold_start_s.get(deployment, self.timeouts.get(deployment, OVERRUN_RETRY_S))
        elapsed = self._clock() - self._woken_at.get(deployment, self._clock())
        rest = expected - elapsed
        return rest if rest >= 1 else OVERRUN_RETRY_S

    def _start_wake(self, deployment: str, wake: Callable[[], Awaitable[Any]]) -> asyncio.Future[None]:
        self._woken_at[deployment] = self._clock()
        # a fresh context: Serve would cancel a call made in a request's context with that request
        task = asyncio.get_running_loop().create_task(self._wake(deployment, wake), context=contextvars.Context())
        self._wakes[deployment] = task
        return task

    async def _wake(self, deployment: str, wake: Callable[[], Awaitable[Any]]) -> None:
        await wake()
        self.last_cold_start_s[deployment] = self._clock() - self._woken_at[deployment]
        self.counts.mark_running(deployment)

    async def health(self) -> tuple[list[str], list[str]]:
        """The scale-to-zero deployments that are (cold, failing) per Serve's last report: neither
        is pinged (a ping would wake a cold one); Serve's own replica health checks cover them."""
        await self.refreshed()
        cold, failing = [], []
        for deployment in sorted(self.timeouts):
            state = self.counts.state(deployment)
            if state is not None and state.status in UNHEALTHY_STATUSES:
                failing.append(deployment)
            elif state is None or state.running == 0:
                cold.append(deployment)
        return cold, failing
