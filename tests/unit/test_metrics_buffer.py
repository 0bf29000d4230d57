"""maas/edge/metrics.py: a replica's metric events go to the actor in one call per flush interval."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from maas.edge import metrics
from maas.edge.metrics import MetricsRecorder


class Method:
    def __init__(self, calls: list[Any], name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args: Any) -> Any:
        self.calls.append((self.name, args))
        if self.name != "render":
            return None

        async def rendered() -> str:
            return "text"
        return rendered()


class Actor:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.record_many = Method(self.calls, "record_many")
        self.render = Method(self.calls, "render")


def recorder() -> tuple[MetricsRecorder, Actor]:
    rec, actor = MetricsRecorder(), Actor()
    rec._actor = actor
    return rec, actor


def test_events_on_an_event_loop_go_in_one_call_per_interval(monkeypatch: Any) -> None:
    monkeypatch.setattr(metrics, "FLUSH_INTERVAL_S", 0.05)
    rec, actor = recorder()

    async def main() -> None:
        for i in range(100):
            rec.record("maas_requests", {"route": "/x", "model": "m", "status": "200"}, i)
        assert actor.calls == []
        await asyncio.sleep(0.1)
        assert len(actor.calls) == 1 and len(actor.calls[0][1][0]) == 100
        rec.record("maas_requests", {"route": "/x", "model": "m", "status": "200"})
        assert await rec.render() == "text"  # the buffer goes first, then the render
        assert [name for name, _ in actor.calls] == ["record_many", "record_many", "render"]
        await asyncio.sleep(0.1)
        assert len(actor.calls) == 3  # nothing left to send
    asyncio.run(main())


def test_events_from_an_executor_thread_join_the_loops_buffer(monkeypatch: Any) -> None:
    monkeypatch.setattr(metrics, "FLUSH_INTERVAL_S", 0.05)
    rec, actor = recorder()
    event = ("maas_model_calls", {"deployment": "c", "model": "m"}, 1)

    async def main() -> None:
        rec.bind_loop()
        loop = asyncio.get_running_loop()
        for _ in range(3):  # three batches run in the executor
            await loop.run_in_executor(None, rec.record_many, [event])
        assert actor.calls == []
        await asyncio.sleep(0.1)
        assert len(actor.calls) == 1 and len(actor.calls[0][1][0]) == 3
    asyncio.run(main())


def test_events_outside_an_event_loop_are_sent_at_once() -> None:
    rec, actor = recorder()
    thread = threading.Thread(target=rec.record_many, args=([("maas_model_calls", {"deployment": "c", "model": "m"}, 1)],))
    thread.start()
    thread.join()
    assert len(actor.calls) == 1


def test_a_failing_actor_never_reaches_the_caller() -> None:
    rec = MetricsRecorder()

    class Broken:
        class record_many:  # noqa: N801
            @staticmethod
            def remote(*args: Any) -> None:
                raise RuntimeError("actor gone")

    rec._actor = Broken()
    rec.record("maas_requests", {"route": "/x", "model": "m", "status": "200"})
    assert rec._actor is None
