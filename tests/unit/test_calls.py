"""The ingress's calls into deployments end with their caller (maas/serving/calls.py).

Stand-ins for Serve's DeploymentResponse / DeploymentResponseGenerator inject the faults (a
full queue, a cancelled caller); the real ones are exercised in tests/integration/test_resilience.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from maas.serving.calls import open_stream, open_streams, result_of, results_of


class Full(Exception):
    """A downstream refusal (what BackPressureError is to Serve)."""


class StubResponse:
    """Resolves after ``delay_s`` to ``value`` (or raises it); records ``cancel()``."""

    def __init__(self, value: Any, delay_s: float = 0.0) -> None:
        self.value, self.delay_s, self.cancelled = value, delay_s, False

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        await asyncio.sleep(self.delay_s)
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def cancel(self) -> None:
        self.cancelled = True


class StubStream:
    """Yields ``items`` after ``delay_s``; a first item that is an exception is raised."""

    def __init__(self, items: list[Any], delay_s: float = 0.0) -> None:
        self.items, self.delay_s, self.cancelled = list(items), delay_s, False

    def __aiter__(self) -> StubStream:
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(self.delay_s)
        if not self.items:
            raise StopAsyncIteration
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


def test_a_cancelled_caller_cancels_the_call() -> None:
    async def scenario() -> StubResponse:
        response = StubResponse("late", delay_s=10)
        task = asyncio.ensure_future(result_of(response))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return response

    assert asyncio.run(scenario()).cancelled


def test_one_failed_call_cancels_the_others() -> None:
    responses = [StubResponse("slow", delay_s=0.2), StubResponse(Full())]
    with pytest.raises(Full):
        asyncio.run(results_of(responses))  # type: ignore[arg-type]
    assert responses[0].cancelled


def test_a_stream_is_refused_before_its_first_item() -> None:
    async def scenario() -> None:
        with pytest.raises(Full):
            await open_stream(StubStream([Full()]))  # type: ignore[arg-type]
        opened = await open_stream(StubStream([1, 2, 3]))  # type: ignore[arg-type]
        assert await collect(opened) == [1, 2, 3]
        assert await collect(await open_stream(StubStream([]))) == []  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_one_refused_stream_cancels_the_opened_ones() -> None:
    streams = [StubStream([1, 2]), StubStream([Full()], delay_s=0.05)]
    with pytest.raises(Full):
        asyncio.run(open_streams(streams))  # type: ignore[arg-type]
    assert streams[0].cancelled


def test_a_stream_closed_before_its_end_cancels_the_call() -> None:
    """What ends a stream early at the ingress (``max_stream_s``) aborts its engine work; a
    stream read to its end is not cancelled."""
    async def scenario() -> tuple[StubStream, StubStream]:
        whole, cut = StubStream([1, 2, 3]), StubStream([1, 2, 3])
        assert await collect(await open_stream(whole)) == [1, 2, 3]  # type: ignore[arg-type]
        opened = await open_stream(cut)  # type: ignore[arg-type]
        assert await anext(opened) == 1
        await opened.aclose()
        return whole, cut

    whole, cut = asyncio.run(scenario())
    assert not whole.cancelled and cut.cancelled
