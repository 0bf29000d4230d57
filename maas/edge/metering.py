"""What a request's API key is charged when its client goes away before the answer ends.

Tokens are charged to the key (its tokens per minute, :mod:`maas.edge.auth`) as they are
produced, not only when an answer ends:

- A stream is *charged as it is produced*: each result that arrives from the generator adds its
  new prompt and completion tokens to the request's :class:`TokenMeter` before it goes on to the
  client (:func:`metered`). The meter sends its count to the limiter every
  :data:`CHARGE_STEP` tokens and when the stream closes, so a client that reads 1,000 tokens and
  drops the connection has paid for them (at most ``CHARGE_STEP - 1`` of a stream can be lost, if
  its generator is never closed). Dropping the connection also cancels the ingress request,
  which cancels the generator call and aborts the engine request (``maas/serving/calls.py``).
- A whole (non-streamed) answer comes back from the generator in one piece, so a cancelled call
  has no count: a generation cut off (client gone, request deadline) is charged the most it
  could have produced, its prompt plus ``max_tokens`` for each choice (:func:`cut_off_charged`).
- When an answer ends normally, its ``usage`` settles the meter (:meth:`TokenMeter.settle`):
  the key pays the reported usage once, whatever part of it was already charged on the way.

The admission decorator (:func:`maas.edge.admission.admitted`) makes one meter per request and
makes it current (a context variable) while the route runs; the ingress's generation calls take
the current meter when they start. Work with no current meter (a batch request, a Ray job's
handle call) is charged by its caller, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

CHARGE_STEP = 16
"""Tokens a meter gathers before it charges them: one limiter call per 16 tokens, not per token."""

_CURRENT: ContextVar[TokenMeter | None] = ContextVar("maas_token_meter", default=None)


class TokenMeter:
    """The tokens one request has produced, charged to its key through ``charge(tokens)``."""

    def __init__(self, charge: Callable[[int], None], step: int = CHARGE_STEP) -> None:
        self._charge = charge
        self.step = step
        self.charged = 0
        self.pending = 0

    def add(self, tokens: int) -> None:
        """Count ``tokens`` just produced; charge them once :attr:`step` have gathered."""
        if tokens > 0:
            self.pending += tokens
            if self.pending >= self.step:
                self.flush()

    def flush(self) -> None:
        """Charge every token counted and not charged yet."""
        if self.pending > 0:
            tokens, self.pending = self.pending, 0
            self.charged += tokens
            self._charge(tokens)

    def settle(self, total: int | None) -> None:
        """The answer ended with ``total`` tokens of usage (None: unknown): charge what of it is
        not charged yet, so the key pays the reported usage exactly once."""
        self.flush()
        if total is not None and total > self.charged:
            self.pending = total - self.charged
            self.flush()


def current_meter() -> TokenMeter | None:
    """The meter of the request being admitted, if any."""
    return _CURRENT.get()


@contextmanager
def metering(meter: TokenMeter) -> Iterator[TokenMeter]:
    """Make ``meter`` current for the block (the route of one request)."""
    token = _CURRENT.set(meter)
    try:
        yield meter
    finally:
        _CURRENT.reset(token)


async def metered(results: AsyncIterator[Any], meter: TokenMeter | None) -> AsyncIterator[Any]:
    """Pass a generator's results through (items with cumulative ``prompt_tokens`` and
    ``completion_tokens``), counting each one's new tokens on ``meter`` before it goes on; the
    count is charged when the stream closes, however it ends."""
    if meter is None:
        async for result in results:
            yield result
        return
    seen = 0
    try:
        async for result in results:
            total = result.prompt_tokens + result.completion_tokens
            meter.add(total - seen)
            seen = max(seen, total)
            yield result
    finally:
        meter.flush()


async def cut_off_charged(call: Awaitable[T], most_tokens: int) -> T:
    """Await a whole generation; if it is cancelled (client gone, deadline), charge the current
    meter ``most_tokens``: the prompt and the most the engine could have produced."""
    meter = current_meter()
    try:
        return await call
    except asyncio.CancelledError:
        if meter is not None:
            meter.add(most_tokens)
            meter.flush()
        raise
