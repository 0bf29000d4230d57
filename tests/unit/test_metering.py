"""maas/edge/metering.py: tokens are charged to the key as they are produced, so a client that
drops the connection pays for what it was generated, and the generation stops with it."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from maas.edge.metering import TokenMeter, cut_off_charged, metered, metering
from maas.protocol.chat import GenerationResult
from tests.unit.ingress_fakes import PROMPT_TOKENS, Generator, app, charged, chat


def test_a_meter_charges_in_steps_and_settles_usage_once() -> None:
    charges: list[int] = []
    meter = TokenMeter(charges.append, step=4)
    for _ in range(6):
        meter.add(1)
    assert charges == [4] and meter.pending == 2
    meter.settle(10)  # the answer's usage: what is not charged yet, once
    assert charges == [4, 2, 4] and meter.charged == 10
    meter.settle(10)
    meter.flush()
    assert sum(charges) == 10


def test_a_stream_closed_early_is_charged_what_it_produced() -> None:
    charges: list[int] = []
    meter = TokenMeter(charges.append)

    async def results() -> Any:
        for n in range(1, 1000):
            yield GenerationResult(chunks=[], prompt_tokens=7, completion_tokens=n)

    async def main() -> None:
        stream = metered(results(), meter)
        for _ in range(30):
            await anext(stream)
        await stream.aclose()  # the client went away

    asyncio.run(main())
    assert sum(charges) == 7 + 30


def test_a_whole_answer_cut_off_is_charged_the_most_it_could_produce() -> None:
    charges: list[int] = []

    async def main() -> None:
        with metering(TokenMeter(charges.append)):
            call = asyncio.ensure_future(cut_off_charged(asyncio.Event().wait(), 123))
            await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        assert await cut_off_charged(asyncio.sleep(0, "done"), 99) == "done"  # no meter: nothing

    asyncio.run(main())
    assert charges == [123]


# ------------------------------------------------------------- the ingress's app, without Ray


def scope(secret: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "root_path": "", "query_string": b"", "server": ("test", 80), "client": ("test", 1),
            "headers": [(b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {secret}".encode())]}


async def stream_then_disconnect(asgi: Any, secret: str, body: dict[str, Any], events: int) -> list[str]:
    """POST ``body`` and read ``events`` server-sent events, then go away (``http.disconnect``)."""
    received: list[str] = []
    enough = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.extend(e for e in message["body"].decode().split("\n\n") if e.startswith("data: "))
            if len(received) >= events:
                enough.set()

    await asyncio.wait_for(asyncio.ensure_future(asgi(scope(secret), receive, send)), 10)
    gc.collect()  # an abandoned stream's generators are closed by the loop's finalizer...
    for _ in range(5):
        await asyncio.sleep(0.01)  # ...which runs their ``finally`` in new tasks
    return received


def test_a_dropped_stream_is_charged_and_its_generation_stops(tmp_path: Path) -> None:
    generator = Generator(delay_s=0.002)
    asgi, secret = app(tmp_path, {"gen": generator})

    async def main() -> list[str]:
        return await stream_then_disconnect(asgi, secret, chat("gen", stream=True, max_tokens=200), 40)

    received = asyncio.run(main())
    assert len(received) >= 40 and "[DONE]" not in received[-1]
    engine = generator.streams[0]
    assert engine.produced < 200  # it stopped with the client: no usage chunk was ever sent
    delivered = len(received)
    assert PROMPT_TOKENS + delivered <= charged(asgi) <= PROMPT_TOKENS + engine.produced


def test_a_finished_stream_is_charged_its_usage_once(tmp_path: Path) -> None:
    generator = Generator(delay_s=0, tokens=30)
    asgi, secret = app(tmp_path, {"gen": generator})

    async def main() -> list[str]:
        return await stream_then_disconnect(asgi, secret, chat("gen", stream=True, max_tokens=30), 10_000)

    received = asyncio.run(main())
    assert received[-1] == "data: [DONE]"
    usage = json.loads(received[-2].removeprefix("data: "))["usage"]
    assert usage["total_tokens"] == PROMPT_TOKENS + 30 == charged(asgi)


def test_a_whole_answer_cut_off_by_its_client_is_charged(tmp_path: Path) -> None:
    """A client gone mid-generation cancels the ingress request (as Serve does): the engine call
    is cancelled and the key pays the prompt and ``max_tokens``."""
    generator = Generator(hang=True)
    asgi, secret = app(tmp_path, {"gen": generator})

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": json.dumps(chat("gen", stream=False, max_tokens=50)).encode()}

        async def send(message: dict[str, Any]) -> None:
            raise AssertionError("no answer is sent to a client that went away")

        request = asyncio.ensure_future(asgi(scope(secret), receive, send))
        while not generator.calls:
            await asyncio.sleep(0.01)
        await generator.calls[0].started.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(main())
    assert generator.calls[0].cancelled
    assert charged(asgi) == PROMPT_TOKENS + 50
