"""maas/serving/coalesce.py: concurrent calls per key become one downstream call, results split back."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from maas.serving.coalesce import Coalescer


class Downstream:
    """Doubles each item after ``delay_s``; items equal to ``"bad"`` fail the whole call."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[str, list[object]]] = []
        self.cancelled = 0
        self.running = 0
        self.max_running = 0

    async def __call__(self, key: str, items: list[object]) -> list[object]:
        self.calls.append((key, list(items)))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        if "bad" in items:
            raise ValueError("bad input")
        return [f"{key}:{item}" for item in items]


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_a_lone_call_goes_at_once_and_gets_its_results() -> None:
    async def main() -> None:
        down = Downstream(delay_s=0)
        c = Coalescer(down, max_batch=8, max_in_flight=1)
        assert await c.submit("m", ["a", "b"]) == ["m:a", "m:b"]
        assert down.calls == [("m", ["a", "b"])]
        assert await c.submit("m", []) == []
        assert c.pending("m") == 0 and not c._keys  # nothing left behind
    run(main())


def test_callers_arriving_during_a_call_share_the_next_one() -> None:
    async def main() -> None:
        down = Downstream()
        c = Coalescer(down, max_batch=64, max_in_flight=1)
        results = await asyncio.gather(*(c.submit("m", [i]) for i in range(10)))
        assert results == [[f"m:{i}"] for i in range(10)]
        # the first goes alone; the nine that queued behind it go as one call
        assert [len(items) for _, items in down.calls] == [1, 9]
        assert down.max_running == 1
    run(main())


def test_keys_are_separate_and_batches_respect_max_batch() -> None:
    async def main() -> None:
        down = Downstream()
        c = Coalescer(down, max_batch=4, max_in_flight=1)
        calls = [c.submit("a", [i]) for i in range(9)] + [c.submit("b", ["x", "y"])]
        results = await asyncio.gather(*calls)
        assert results[:9] == [[f"a:{i}"] for i in range(9)] and results[9] == ["b:x", "b:y"]
        assert all(key == "b" for key, items in down.calls if "x" in items)
        assert max(len(items) for _, items in down.calls) <= 4
        assert [len(items) for key, items in down.calls if key == "a"] == [1, 4, 4]
    run(main())


def test_a_caller_bigger_than_max_batch_goes_alone_and_whole() -> None:
    async def main() -> None:
        down = Downstream()
        c = Coalescer(down, max_batch=3, max_in_flight=1)
        big, small = await asyncio.gather(c.submit("m", list(range(5))), c.submit("m", ["s"]))
        assert big == [f"m:{i}" for i in range(5)] and small == ["m:s"]
        assert [len(items) for _, items in down.calls] == [5, 1]
    run(main())


def test_max_in_flight_bounds_concurrent_downstream_calls() -> None:
    async def main() -> None:
        down = Downstream()
        c = Coalescer(down, max_batch=2, max_in_flight=3)
        await asyncio.gather(*(c.submit("m", [i]) for i in range(20)))
        assert down.max_running == 3
    run(main())


def test_an_error_reaches_only_the_caller_it_belongs_to() -> None:
    async def main() -> None:
        down = Downstream()
        c = Coalescer(down, max_batch=64, max_in_flight=1)
        first = asyncio.ensure_future(c.submit("m", ["warm"]))  # holds the slot: the rest queue
        await asyncio.sleep(0)
        outcomes = await asyncio.gather(c.submit("m", ["ok1"]), c.submit("m", ["bad"]),
                                        c.submit("m", ["ok2"]), return_exceptions=True)
        assert await first == ["m:warm"]
        assert outcomes[0] == ["m:ok1"] and outcomes[2] == ["m:ok2"]
        assert isinstance(outcomes[1], ValueError)
        # one shared call failed, then each caller was tried on its own
        assert [items for _, items in down.calls] == [["warm"], ["ok1", "bad", "ok2"], ["ok1"], ["bad"], ["ok2"]]
    run(main())


def test_without_isolation_a_failed_call_fails_all_its_callers() -> None:
    async def main() -> None:
        c = Coalescer(Downstream(), max_batch=64, max_in_flight=1, isolate_errors=False)
        first = asyncio.ensure_future(c.submit("m", ["warm"]))
        await asyncio.sleep(0)
        outcomes = await asyncio.gather(c.submit("m", ["ok"]), c.submit("m", ["bad"]),
                                        return_exceptions=True)
        await first
        assert all(isinstance(o, ValueError) for o in outcomes)
    run(main())


def test_a_wrong_number_of_outputs_is_an_error() -> None:
    async def short(key: str, items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> None:
        with pytest.raises(RuntimeError, match="outputs"):
            await Coalescer(short).submit("m", [1, 2])
    run(main())


def test_cancelling_one_caller_does_not_cancel_the_others() -> None:
    async def main() -> None:
        down = Downstream(delay_s=0.05)
        c = Coalescer(down, max_batch=64, max_in_flight=1)
        first = asyncio.ensure_future(c.submit("m", ["warm"]))
        await asyncio.sleep(0)
        queued = [asyncio.ensure_future(c.submit("m", [i])) for i in range(3)]
        await asyncio.sleep(0)
        queued[1].cancel()  # before its call is sent: it is dropped
        await asyncio.sleep(0.07)  # the shared call is in flight now
        sent = asyncio.ensure_future(c.submit("m", ["late"]))
        await asyncio.sleep(0)
        queued[0].cancel()  # after its call was sent: the call goes on for queued[2]
        assert await queued[2] == ["m:2"]
        assert await first == ["m:warm"] and await sent == ["m:late"]
        assert queued[0].cancelled() and queued[1].cancelled()
        assert [items for _, items in down.calls] == [["warm"], [0, 2], ["late"]]
        assert down.cancelled == 0
    run(main())


def test_a_call_whose_callers_all_left_is_cancelled() -> None:
    async def main() -> None:
        down = Downstream(delay_s=10)
        c = Coalescer(down, max_batch=64, max_in_flight=1)
        only = asyncio.ensure_future(c.submit("m", ["x"]))
        await asyncio.sleep(0.01)
        only.cancel()
        await asyncio.sleep(0.01)
        assert down.cancelled == 1 and not c._keys
    run(main())


def test_downstream_calls_run_outside_the_callers_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    seen: list[str] = []

    async def down(key: str, items: list[int]) -> list[int]:
        seen.append(request_id.get())
        return items

    async def caller(c: Coalescer, rid: str) -> list[int]:
        request_id.set(rid)
        return await c.submit("m", [1])

    async def main() -> None:
        await caller(Coalescer(down), "r1")
        await caller(Coalescer(down, fresh_context=False), "r2")
        assert seen == ["none", "r2"]
    run(main())


def test_callers_beyond_max_pending_are_refused_at_once() -> None:
    class Overloaded(Exception):
        pass

    async def main() -> None:
        c = Coalescer(Downstream(), max_batch=64, max_in_flight=1, max_pending=2, overloaded=Overloaded)
        outcomes = await asyncio.gather(*(c.submit("m", [i]) for i in range(5)), return_exceptions=True)
        assert outcomes[:3] == [["m:0"], ["m:1"], ["m:2"]]
        assert all(isinstance(o, Overloaded) for o in outcomes[3:])
        assert await c.submit("m", ["again"]) == ["m:again"]
    run(main())


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Coalescer(Downstream(), max_batch=0)


def test_the_ingress_settings_follow_the_deployment() -> None:
    from maas.config import ClassifierConfig
    from maas.protocol.errors import ServiceUnavailableError
    from maas.serving.coalesce import COALESCE_IN_FLIGHT, coalescing

    config = ClassifierConfig.model_validate({"deployment": {"num_replicas": 3, "max_queued_requests": 10},
                                             "batching": {"max_inputs_per_request": 64}})
    settings = coalescing(config)
    assert settings["max_batch"] == 64 and settings["max_in_flight"] == 3 * COALESCE_IN_FLIGHT
    assert settings["max_pending"] == 10 and isinstance(settings["overloaded"](), ServiceUnavailableError)
    assert coalescing(ClassifierConfig())["max_pending"] is None  # -1: no bound, as Serve's own queue
