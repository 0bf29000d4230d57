"""Shadow traffic: a share of live classify requests also sent to a challenger version.

The problem: a challenger that beats the live version on a validation split says little about
the traffic the deployment really serves. The mechanism: once the ingress has the live answer of
a classify request for a registry model, :meth:`ShadowTraffic.after_answer` samples it
(``fraction``); a sampled request whose model has a challenger (the registry's newest version,
newer than the live one and not live) starts one task that classifies the same texts with the
challenger and compares: top label equal or not, each version's top probability and latency.

The guarantees:

- the client's answer never waits: ``after_answer`` only starts a task (in a fresh context, so
  nothing of the client's request, its metering or its cancellation, reaches it);
- at most ``max_in_flight`` shadow calls per ingress replica; a sampled request over that is
  dropped and counted, never queued;
- a challenger's error is counted and logged by its type, never raised to the client;
- metric labels are the served model's name and registry versions, never client text.

What it finds goes two ways: metric events (``/metrics``, :data:`maas.edge.metrics.DEFINITIONS`)
and tallies added every :data:`PERSIST_EVERY_S` to the registry
(:class:`maas.storage.shadow_stats.ShadowLog`), which ``/v1/models`` and ``maas models list`` read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from maas.config import ShadowConfig
from maas.serving.tally_writer import TallyWriter
from maas.storage.shadow_stats import ShadowTally

logger = logging.getLogger(__name__)

PERSIST_EVERY_S = 1.0
"""How long a replica gathers shadow tallies before adding them to the registry in one write."""

Event = tuple[str, dict[str, str], float]


@dataclass(frozen=True)
class ShadowPair:
    """A served model with the live version that answered and the challenger shadowing it."""

    model: str
    live_version: str
    challenger_version: str

    def labels(self) -> dict[str, str]:
        return {"model": self.model, "live_version": self.live_version,
                "challenger_version": self.challenger_version}


def version_of(model_id: str) -> str:
    """``v2`` of ``sentiment/v2``."""
    return model_id.rpartition("/")[2]


def compare(pair: ShadowPair, live: Sequence[Any], challenger: Sequence[Any],
            live_s: float, challenger_s: float) -> tuple[ShadowTally, list[Event]]:
    """The tally and metric events of one answered shadow call (results with ``label``, ``probs``)."""
    agreements = sum(a.label == b.label for a, b in zip(live, challenger, strict=True))
    live_top = [max(r.probs) for r in live]
    challenger_top = [max(r.probs) for r in challenger]
    tally = ShadowTally(requests=1, texts=len(live), agreements=agreements,
                        live_confidence_sum=sum(live_top), challenger_confidence_sum=sum(challenger_top),
                        live_latency_s_sum=live_s, challenger_latency_s_sum=challenger_s)
    labels = pair.labels()
    as_live, as_challenger = {**labels, "answered_by": "live"}, {**labels, "answered_by": "challenger"}
    events: list[Event] = [
        ("maas_shadow_requests", labels, 1), ("maas_shadow_texts", labels, len(live)),
        ("maas_shadow_agreements", labels, agreements),
        ("maas_shadow_latency_seconds", as_live, live_s),
        ("maas_shadow_latency_seconds", as_challenger, challenger_s),
    ]
    events += [("maas_shadow_confidence", as_live, p) for p in live_top]
    events += [("maas_shadow_confidence", as_challenger, p) for p in challenger_top]
    return tally, events


class ShadowTraffic:
    """One ingress replica's shadow calls.

    ``challenger_of(name)``: the challenger's model id of a served name, or None;
    ``call(model_id, texts)``: classify with a model id; ``record(events)``: metric events, not
    waiting; ``persist(pair, tally)``: add a tally to the registry (blocking: run in a thread).
    """

    def __init__(self, config: ShadowConfig, challenger_of: Callable[[str], str | None],
                 call: Callable[[str, list[str]], Awaitable[Sequence[Any]]],
                 record: Callable[[list[Event]], None], persist: Callable[[ShadowPair, ShadowTally], None],
                 rng: random.Random | None = None, persist_every_s: float = PERSIST_EVERY_S) -> None:
        self.config = config
        self.challenger_of = challenger_of
        self.call = call
        self.record = record
        self.rng = rng or random.Random()
        self.writer: TallyWriter[ShadowPair, ShadowTally] = TallyWriter(
            persist, ShadowTally.plus, "shadow stats", persist_every_s)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def after_answer(self, model: str, live_id: str, texts: list[str], live: Sequence[Any],
                     live_s: float) -> bool:
        """Shadow an answered request if it is sampled and ``model`` has a challenger; True if a
        shadow call started. Returns at once (call it from the event loop)."""
        if self.config.fraction <= 0 or self.rng.random() >= self.config.fraction:
            return False
        challenger_id = self.challenger_of(model)
        if challenger_id is None or challenger_id == live_id:
            return False
        pair = ShadowPair(model, version_of(live_id), version_of(challenger_id))
        if len(self._tasks) >= self.config.max_in_flight:
            self._add(pair, ShadowTally(dropped=1), [("maas_shadow_dropped", pair.labels(), 1)])
            return False
        shadow = self._shadow(pair, challenger_id, list(texts), list(live), live_s)
        task = asyncio.get_running_loop().create_task(shadow, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for the running shadow calls and write what they found (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.drain()

    async def _shadow(self, pair: ShadowPair, challenger_id: str, texts: list[str], live: list[Any],
                      live_s: float) -> None:
        start = time.perf_counter()
        try:
            answers = list(await self.call(challenger_id, texts))
            tally, events = compare(pair, live, answers, live_s, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - a challenger's failure is data, never the client's error
            logger.warning("shadow call to %s failed: %s", challenger_id, type(exc).__name__)
            labels = pair.labels()
            self._add(pair, ShadowTally(requests=1, errors=1),
                      [("maas_shadow_requests", labels, 1), ("maas_shadow_errors", labels, 1)])
            return
        self._add(pair, tally, events)

    def _add(self, pair: ShadowPair, tally: ShadowTally, events: list[Event]) -> None:
        self.record(events)
        self.writer.add(pair, tally)
