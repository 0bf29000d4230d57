"""Fair share of the service across tenants: no API key (or client address) takes it from the others.

**The problem.** Every deployment runs a bounded number of requests at once, and vLLM a bounded
number of sequences (``max_num_seqs``), each waiting line in arrival order. One tenant that sends
many requests, or one request of 128 sequences, fills them: everyone else waits behind it for
minutes, since vLLM never preempts a running sequence to make room for a waiting one.

**The mechanism.** Each ingress replica keeps, per *tenant* (an API key; without keys, a client
address; a batch's requests count for its key, Ray handle calls for the tenant ``internal``), the
work it has in flight:

- *requests*, counted by :func:`maas.edge.admission.admitted` for every model route: at most the
  key's ``max_in_flight_requests`` (the config's default) at once; one more waits in its tenant's
  line for one of them to end, at most ``max_wait_s``, then gets a 429;
- *generated sequences* on each generator (each prompt's ``n`` choices, taken when its generator
  call starts and given back when it ends): at most the key's ``max_in_flight_sequences``, by
  default ``sequence_share`` of the generator's slots (``max_num_seqs`` x replicas), so a flood
  leaves the rest of the batch free for others. A request's sequences beyond that wait for the
  tenant's own to end; the request is refused (429) only if its *first* sequence cannot start
  within ``max_wait_s``: a request that has started is slowed, never cut. When the generator's
  slots are all taken, the waiting sequences of all tenants are started least-in-flight first
  (ties: the tenant served longest ago), so a light tenant goes before a heavy one's backlog.

A 429 has ``Retry-After`` (the tenant's recent time per turn) and the OpenAI error body; its
``code`` names the limit (``too_many_requests_in_flight``, ``too_many_sequences_in_flight``).

**The guarantees.** A turn is given back however its work ends: answered, failed, cancelled (the
request deadline), a stream that ends or is closed, a client that goes away, or a response that is
dropped before it starts (a finalizer). Counts are per ingress replica, with the service-wide
limits divided by the replica count (no shared actor: two more calls a request would cost more
than the fairness is worth); requests beyond the ingress's own ``max_ongoing_requests`` wait in
Serve's proxy, in arrival order, before they reach this.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from maas.config import AppConfig, DeploymentOptions
from maas.edge.fair_queue import FairQueue, Lease, Overloaded, released_after
from maas.edge.key_file import ApiKey
from maas.limits import FairShareLimits
from maas.protocol.errors import RateLimitError
from maas.serving.calls import open_stream

T = TypeVar("T")

INTERNAL = "internal"
"""The tenant of work with no HTTP request and no key: Ray handle calls, batches without keys."""


# ---------------------------------------------------------------------------------- tenants


@dataclass(frozen=True)
class Tenant:
    """Who a request's work is counted for: ``key:<id>``, ``addr:<host>`` or :data:`INTERNAL`."""

    name: str
    key: ApiKey | None = None

    @property
    def described(self) -> str:
        if self.key is not None:
            return f"API key '{self.key.id}'"
        return "this client address" if self.name.startswith("addr:") else "work without a request"


def tenant_of(request: Any, key: ApiKey | None) -> Tenant:
    """The tenant of an HTTP request: its API key, or without keys its client's address."""
    if key is not None:
        return Tenant(f"key:{key.id}", key)
    client = getattr(request, "client", None)
    return Tenant(f"addr:{getattr(client, 'host', None) or 'unknown'}")


@dataclass
class Turn:
    """One admitted request's place in the fair share: its tenant, its request slot (None: not
    counted), and whether one of its generated sequences has started (the later ones then wait
    without a bound)."""

    tenant: Tenant
    lease: Lease | None = None
    started: bool = False

    @contextmanager
    def current(self) -> Iterator[Turn]:
        """Make this the turn of the work done in the block (the route of its request)."""
        token = _TURN.set(self)
        try:
            yield self
        finally:
            _TURN.reset(token)

    def end(self) -> None:
        """Give the request slot back."""
        if self.lease is not None:
            self.lease.release()

    def held_by(self, response: Any) -> Any:
        """Give the slot back now, or, for a streamed response, when its stream ends or is dropped."""
        if hasattr(response, "body_iterator"):
            response.body_iterator = released_after(response.body_iterator, self.lease)
        else:
            self.end()
        return response


_TURN: ContextVar[Turn | None] = ContextVar("maas_fair_turn", default=None)


def current_turn() -> Turn:
    """The turn of the request being served; work outside a request is the tenant ``internal``."""
    return _TURN.get() or Turn(Tenant(INTERNAL))


def key_turn(key: ApiKey | None) -> Turn:
    """The turn of work done for ``key`` without a request of its own (a Batch API request)."""
    return Turn(Tenant(f"key:{key.id}", key) if key is not None else Tenant(INTERNAL))


async def admit_turn(request: Any, key: ApiKey | None) -> Turn:
    """The request's turn from its ingress's fair share (none there: a turn that counts nothing)."""
    share: FairShare | None = getattr(request.app.state.ingress, "fair_share", None)
    if share is None:
        return Turn(tenant_of(request, key))
    return await share.admit(request, key)


# ---------------------------------------------------------------------------------- the ingress's share


def replica_share(limit: int, replicas: int) -> int:
    """One replica's part of a service-wide limit (rounded up, at least 1)."""
    return max(1, math.ceil(limit / replicas))


def planned_replicas(options: DeploymentOptions, most: bool) -> int:
    """A deployment's replica count: the fixed one, or of an autoscaled one its most (``most``)
    or its fewest (at least 1)."""
    if options.autoscaling is None:
        return options.num_replicas
    scaling = options.autoscaling
    return max(1, scaling.max_replicas if most else scaling.min_replicas)


class FairShare:
    """The fair share of one ingress replica: requests per tenant, and sequences per tenant on each
    generator (``capacities``: a generator's sequence slots for the whole service)."""

    def __init__(self, limits: FairShareLimits, capacities: dict[str, int], ingress_replicas: int = 1,
                 generator_of: Callable[[str], str] = lambda model: model) -> None:
        self.limits = limits
        self.replicas = ingress_replicas
        self.generator_of = generator_of
        self.requests = FairQueue()
        self.sequences = {name: FairQueue(replica_share(slots, ingress_replicas))
                          for name, slots in capacities.items()}

    @classmethod
    def of(cls, config: AppConfig, generator_of: Callable[[str], str] = lambda model: model) -> FairShare:
        """From the app's config: each generator's slots are ``max_num_seqs`` x its most replicas
        (an autoscaled generator's load must reach Serve to scale it); the ingress replicas split
        them, and the per-tenant limits, by their fewest count."""
        capacities = {g.name: g.max_num_seqs * planned_replicas(g.deployment, most=True)
                      for g in config.generators}
        replicas = planned_replicas(config.ingress.deployment, most=False)
        return cls(config.ingress.fair_share, capacities, replicas, generator_of)

    async def admit(self, request: Any, key: ApiKey | None) -> Turn:
        """A request slot of the request's tenant (waits its turn; 429 past ``max_wait_s``)."""
        tenant = tenant_of(request, key)
        if not self.limits.enabled:
            return Turn(tenant)
        limit = (key.max_in_flight_requests if key else None) or self.limits.max_in_flight_requests
        try:
            lease = await self.requests.acquire(tenant.name, 1, replica_share(limit, self.replicas),
                                                 self.limits.max_wait_s, self.limits.max_waiting_requests)
        except Overloaded as over:
            raise self._refusal(tenant, over, "requests") from None
        return Turn(tenant, lease)

    # ------------------------------------------------------------------ generator calls

    async def call(self, model: str, n: int, make: Callable[[], Awaitable[T]], turn: Turn | None = None) -> T:
        """A whole-answer generator call of ``n`` sequences, made when its tenant's turn comes."""
        lease = await self._sequences(model, n, turn or current_turn())
        try:
            return await make()
        finally:
            if lease is not None:
                lease.release()

    async def calls(self, model: str, n: int, makes: list[Callable[[], Awaitable[T]]]) -> list[T]:
        """:meth:`call` for several prompts; one failing (or the caller cancelled) cancels the rest."""
        turn = current_turn()
        return await all_or_cancel([self.call(model, n, make, turn) for make in makes])

    async def open_stream(self, model: str, n: int, make: Callable[[], Any]) -> AsyncIterator[Any]:
        """A streaming generator call (``make`` issues it) opened when its tenant's turn comes
        (:func:`maas.serving.calls.open_stream`); its sequences are given back when the stream ends."""
        return (await self.open_streams(model, n, [make]))[0]

    async def open_streams(self, model: str, n: int, makes: list[Callable[[], Any]]) -> list[AsyncIterator[Any]]:
        """Streams of several prompts: those that may start now are opened now, and the first
        one waits its turn (bounded); the others start in order as the tenant's sequences end,
        so a large request streams from its first prompts on."""
        if not self._gated(model):
            return await self._opened(makes, [None] * len(makes))
        turn = current_turn()
        leases: list[Lease | None] = []
        while len(leases) < len(makes) and (lease := self._sequences_now(model, n, turn)) is not None:
            leases.append(lease)
        if not leases:
            leases.append(await self._sequences(model, n, turn))
        opened = await self._opened(makes[:len(leases)], leases)
        return opened + [self._later_stream(model, n, turn, make) for make in makes[len(leases):]]

    @staticmethod
    async def _opened(makes: list[Callable[[], Any]], leases: list[Lease | None]) -> list[AsyncIterator[Any]]:
        calls = [make() for make in makes]
        try:
            streams = await all_or_cancel([open_stream(call) for call in calls])
        except BaseException:
            for call, lease in zip(calls, leases):
                call.cancel()
                if lease is not None:
                    lease.release()
            raise
        return [released_after(stream, lease) for stream, lease in zip(streams, leases)]

    async def _later_stream(self, model: str, n: int, turn: Turn, make: Callable[[], Any]) -> AsyncIterator[Any]:
        lease = await self._sequences(model, n, turn)
        try:
            async for item in await open_stream(make()):
                yield item
        finally:
            if lease is not None:
                lease.release()

    def _gated(self, model: str) -> bool:
        return self.limits.enabled and self.generator_of(model) in self.sequences

    def _sequence_limit(self, queue: FairQueue, tenant: Tenant) -> int:
        count = tenant.key.max_in_flight_sequences if tenant.key else None
        if count is not None:
            return replica_share(count, self.replicas)
        return max(1, math.floor(self.limits.sequence_share * (queue.capacity or 1)))

    def _sequences_now(self, model: str, n: int, turn: Turn) -> Lease | None:
        queue = self.sequences[self.generator_of(model)]
        lease = queue.try_acquire(turn.tenant.name, n, self._sequence_limit(queue, turn.tenant))
        turn.started = turn.started or lease is not None
        return lease

    async def _sequences(self, model: str, n: int, turn: Turn) -> Lease | None:
        """``n`` sequence slots of the turn's tenant on ``model``'s generator (None: not counted)."""
        if not self._gated(model):
            return None
        queue = self.sequences[self.generator_of(model)]
        try:
            lease = await queue.acquire(turn.tenant.name, n, self._sequence_limit(queue, turn.tenant),
                                        self.limits.max_wait_s, keep_waiting=lambda: turn.started)
        except Overloaded as over:
            raise self._refusal(turn.tenant, over, "sequences") from None
        turn.started = True
        return lease

    def _refusal(self, tenant: Tenant, over: Overloaded, kind: str) -> RateLimitError:
        """The 429 of work that could not start: what held it back, and when to try again."""
        if kind == "requests":
            what, setting = "requests", "max_in_flight_requests"
        else:
            what = "generated sequences on this model"
            keyed = tenant.key is not None and tenant.key.max_in_flight_sequences is not None
            setting = "max_in_flight_sequences" if keyed else "sequence_share"
        if over.full:
            why = f"{over.in_flight} in flight and {self.limits.max_waiting_requests} more waiting"
        elif over.in_flight >= over.limit:
            why = f"{over.in_flight} in flight, its limit on this ingress replica ({setting}), for {self.limits.max_wait_s:g} s"
        else:
            why = f"every slot of the model taken by others with less in flight, for {self.limits.max_wait_s:g} s"
        return RateLimitError(
            f"Too many {what} in flight for {tenant.described}: {why}. Please try again in "
            f"{math.ceil(over.retry_after_s)}s, or send fewer at once.",
            code=f"too_many_{kind}_in_flight", retry_after_s=over.retry_after_s, error_type=kind,
        )


async def all_or_cancel(waits: list[Awaitable[T]]) -> list[T]:
    """Await all of ``waits`` concurrently; one failing (or the caller cancelled) cancels the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t in done and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
