"""What a generator replica knows about its own latency, for latency-driven autoscaling
(:mod:`maas.serving.latency_autoscaling`): when each request arrived, when its first token came,
and which requests are still waiting for one.

:meth:`FirstTokenWatch.stats` is what the replica answers to Serve's ``record_autoscaling_stats``:
the p95 of the TTFTs of the last ``window_s`` seconds and their count, the queue wait (the age of
the oldest request still without a first token: vLLM's waiting queue plus its prefill, as the
replica sees it) and how many requests are waiting. Plain Python, no Serve.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

from maas.serving.latency_autoscaling import QUEUE_WAIT_KEY, TTFT_P95_KEY, TTFT_SAMPLES_KEY, WAITING_KEY, p95

MAX_SAMPLES = 10_000
"""TTFTs kept at most (the newest): bounds memory at any request rate."""


class FirstTokenWatch:
    """Arrivals, first tokens and TTFTs over a sliding window of ``window_s`` seconds."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.waiting: dict[int, float] = {}  # ticket -> arrival time (insertion order: oldest first)
        self.samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)  # (first token at, ttft)
        self._tickets = itertools.count()

    def arrived(self) -> int:
        """A request arrived; the ticket names it in :meth:`first_token` and :meth:`left`."""
        ticket = next(self._tickets)
        self.waiting[ticket] = self.clock()
        return ticket

    def first_token(self, ticket: int) -> float:
        """The request's first token came: its TTFT (seconds), kept as a sample."""
        now = self.clock()
        ttft = now - self.waiting.pop(ticket, now)
        self.samples.append((now, ttft))
        return ttft

    def left(self, ticket: int) -> None:
        """The request ended (answered, failed or cancelled); no sample if it had no first token."""
        self.waiting.pop(ticket, None)

    def recent_ttfts(self) -> list[float]:
        """The TTFTs of the window, after dropping older ones."""
        horizon = self.clock() - self.window_s
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()
        return [ttft for _, ttft in self.samples]

    def queue_wait(self) -> float:
        """Seconds the oldest request still without a first token has waited (0: none waits)."""
        oldest = next(iter(self.waiting.values()), None)
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest)

    def stats(self) -> dict[str, float]:
        """The custom autoscaling metrics of this replica, as Serve wants them (names to numbers)."""
        ttfts = self.recent_ttfts()
        return {TTFT_P95_KEY: p95(ttfts), TTFT_SAMPLES_KEY: float(len(ttfts)),
                QUEUE_WAIT_KEY: self.queue_wait(), WAITING_KEY: float(len(self.waiting))}
