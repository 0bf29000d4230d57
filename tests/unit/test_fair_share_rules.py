"""maas/edge/fair_share.py and fair_queue.py: one tenant's work in flight is bounded, waits in its own
line (fairest tenant first), then is refused with a 429 and Retry-After; every turn is given back,
whether the answer ends, fails, is cancelled or its client goes away. The HTTP tests run the real
ingress app over fake generator handles (tests/unit/ingress_fakes.py), without Ray."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maas.config import AppConfig, GeneratorModelConfig, IngressConfig
from maas.edge import key_file
from maas.edge.fair_queue import FairQueue, Overloaded, released_after
from maas.edge.fair_share import FairShare, Turn, tenant_of
from maas.endpoints.app import build_app
from maas.limits import FairShareLimits
from maas.protocol.errors import RateLimitError
from tests.unit.ingress_fakes import EngineStream, Generator, Method, Prompts, chat, ingress
from tests.unit.test_metering import stream_then_disconnect

# ------------------------------------------------------------------------------ the line


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_work_over_a_tenants_limit_waits_and_starts_in_arrival_order() -> None:
    async def main() -> None:
        queue = FairQueue()
        first, second = [await queue.acquire("a", 1, limit=2, wait_s=1) for _ in range(2)]
        started: list[int] = []

        async def third_and_fourth(i: int) -> None:
            lease = await queue.acquire("a", 1, limit=2, wait_s=5)
            started.append(i)
            await asyncio.Event().wait()
            lease.release()

        waiting = [asyncio.ensure_future(third_and_fourth(i)) for i in (3, 4)]
        await settle()
        assert (queue.in_flight("a"), queue.waiting("a"), started) == (2, 2, [])
        second.release()
        await settle()
        assert started == [3] and queue.waiting("a") == 1
        first.release()
        first.release()  # once only
        await settle()
        assert started == [3, 4] and queue.in_flight("a") == 2
        for task in waiting:
            task.cancel()

    run(main())


def test_when_the_capacity_is_taken_the_least_in_flight_tenant_goes_first() -> None:
    async def main() -> None:
        queue = FairQueue(capacity=4)
        heavy = [await queue.acquire("heavy", 1, limit=4, wait_s=1) for _ in range(4)]
        order: list[str] = []

        async def wants(tenant: str) -> None:
            await queue.acquire(tenant, 1, limit=4, wait_s=5)
            order.append(tenant)

        tasks = [asyncio.ensure_future(wants(t)) for t in ("heavy", "heavy", "light", "other")]
        await settle()
        assert order == [] and queue.in_flight() == 4  # the capacity is the bound, not the limits
        for lease in heavy:
            lease.release()
            await settle()
        # the two with nothing in flight first (in the order they came), then the heavy one's backlog
        assert order == ["light", "other", "heavy", "heavy"]
        await asyncio.gather(*tasks)

    run(main())


def test_tenants_with_as_much_in_flight_take_turns() -> None:
    async def main() -> None:
        queue = FairQueue(capacity=2)
        held = {t: await queue.acquire(t, 1, limit=8, wait_s=1) for t in ("a", "b")}
        order: list[str] = []

        async def wants(tenant: str) -> None:
            lease = await queue.acquire(tenant, 1, limit=8, wait_s=5)
            order.append(tenant)
            held[tenant + str(len(order))] = lease

        tasks = [asyncio.ensure_future(wants(t)) for t in ("a", "a", "b", "b")]
        await settle()
        for name in ("a", "b", "a1", "b2"):  # each release frees one slot
            held[name].release()
            await settle()
        assert order == ["a", "b", "a", "b"]
        await asyncio.gather(*tasks)

    run(main())


def test_a_bounded_wait_ends_in_overloaded_and_a_full_line_refuses_at_once() -> None:
    async def main() -> None:
        queue = FairQueue()
        await queue.acquire("a", 1, limit=1, wait_s=1)
        with pytest.raises(Overloaded) as waited:
            await queue.acquire("a", 1, limit=1, wait_s=0.05)
        assert (waited.value.in_flight, waited.value.limit, waited.value.full) == (1, 1, False)
        assert waited.value.retry_after_s >= 1 and queue.waiting("a") == 0
        blocked = asyncio.ensure_future(queue.acquire("a", 1, limit=1, wait_s=5, max_waiting=1))
        await settle()
        with pytest.raises(Overloaded) as full:  # one already waits: no wait at all
            await queue.acquire("a", 1, limit=1, wait_s=5, max_waiting=1)
        assert full.value.full and queue.waiting("a") == 1
        blocked.cancel()

    run(main())


def test_a_started_request_keeps_waiting_past_the_bound() -> None:
    async def main() -> None:
        queue = FairQueue()
        held = await queue.acquire("a", 1, limit=1, wait_s=1)
        later = asyncio.ensure_future(queue.acquire("a", 1, limit=1, wait_s=0.01, keep_waiting=lambda: True))
        await asyncio.sleep(0.05)
        assert not later.done()
        held.release()
        (await later).release()
        assert queue.in_flight() == 0

    run(main())


def test_cancelled_work_leaves_the_line_and_granted_work_gives_its_units_back() -> None:
    async def main() -> None:
        queue = FairQueue()
        held = await queue.acquire("a", 1, limit=1, wait_s=1)
        waiting = asyncio.ensure_future(queue.acquire("a", 1, limit=1, wait_s=5))
        await settle()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert queue.waiting("a") == 0
        # granted, then cancelled before it ran: its unit is given back, not lost
        granted_late = asyncio.ensure_future(queue.acquire("a", 1, limit=1, wait_s=5))
        await settle()
        held.release()  # grants it (its wake-up is scheduled)...
        granted_late.cancel()  # ...and it is cancelled first
        await asyncio.gather(granted_late, return_exceptions=True)
        await settle()
        assert queue.in_flight() == 0 and queue.waiting("a") == 0

    run(main())


def test_work_larger_than_a_limit_or_the_capacity_starts_alone() -> None:
    async def main() -> None:
        queue = FairQueue(capacity=4)
        big = await queue.acquire("a", 8, limit=2, wait_s=0.01)  # nothing in flight: it may start
        with pytest.raises(Overloaded) as busy:
            await queue.acquire("b", 1, limit=2, wait_s=0.01)
        assert busy.value.busy and busy.value.in_flight == 0  # b is within its limit; the queue is full
        big.release()
        (await queue.acquire("b", 1, limit=2, wait_s=0.01)).release()

    run(main())


def test_a_stream_dropped_before_it_started_gives_its_lease_back() -> None:
    async def items() -> AsyncIterator[int]:
        yield 1

    async def main() -> None:
        queue = FairQueue()
        stream = released_after(items(), await queue.acquire("a", 1, limit=1, wait_s=1))
        assert queue.in_flight() == 1
        del stream  # a response that was never sent
        gc.collect()
        await settle()
        assert queue.in_flight() == 0
        ended = released_after(items(), await queue.acquire("a", 1, limit=1, wait_s=1))
        assert [i async for i in ended] == [1] and queue.in_flight() == 0

    run(main())


def test_the_tenant_is_the_key_else_the_client_address() -> None:
    class Client:
        host = "10.1.2.3"

    class Request:
        client = Client()

    key = key_file.ApiKey(id="alice", sha256="0" * 64)
    assert tenant_of(Request(), key).name == "key:alice"
    assert tenant_of(Request(), None).name == "addr:10.1.2.3"
    assert tenant_of(object(), None).name == "addr:unknown"


def test_limits_are_split_across_ingress_replicas_and_generators_sized_by_their_slots() -> None:
    config = AppConfig.model_validate({
        "generators": [{"name": "g", "path": "/x", "max_num_seqs": 32, "deployment": {"num_replicas": 2}}],
        "ingress": {"deployment": {"num_replicas": 2}, "fair_share": {"max_in_flight_requests": 5}},
    })
    share = FairShare.of(config)
    assert share.replicas == 2 and share.sequences["g"].capacity == 32  # 64 slots, half per replica
    assert share._sequence_limit(share.sequences["g"], tenant_of(None, None)) == 16  # sequence_share 0.5
    keyed = key_file.ApiKey(id="k", sha256="0" * 64, max_in_flight_sequences=9)
    assert share._sequence_limit(share.sequences["g"], tenant_of(None, keyed)) == 5


# ------------------------------------------------------------------------------ over HTTP


def keyed_app(tmp_path: Path, generators: dict[str, Any], limits: dict[str, Any],
              keys: dict[str, dict[str, Any]] | None = None, slots: int = 64) -> tuple[Any, dict[str, str]]:
    """The ingress app over fake generators, with ``keys`` (None: no keys) and these fair-share limits."""
    secrets: dict[str, str] = {}
    path = tmp_path / "keys.yaml"
    for name, options in (keys or {}).items():
        secrets[name] = key_file.add_key(path, name, **options)
    fake = ingress(generators, Prompts())
    fake.config = AppConfig(generators=[GeneratorModelConfig(name=n, path="/x", max_model_len=256, max_num_seqs=slots)
                                        for n in generators], ingress={"fair_share": limits})
    fake.fair_share = FairShare.of(fake.config)
    built = build_app(fake, IngressConfig(api_keys_file=str(path) if keys else None))
    built.state.ingress.key_auth = built.state.key_auth
    built.state.recorder._send = lambda events: None
    return built, secrets


def client(asgi: Any, host: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi, client=(host, 1234)), base_url="http://t")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def until(check: Any) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


def test_a_key_over_its_requests_waits_then_gets_429_while_another_key_is_answered(tmp_path: Path) -> None:
    slow, fast = Generator(hang=True), Generator()
    asgi, secrets = keyed_app(tmp_path, {"slow": slow, "fast": fast}, {"max_wait_s": 0.2},
                              keys={"a": {"max_in_flight": 1}, "b": {}})

    async def main() -> None:
        async with client(asgi) as http:
            held = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat("slow", False),
                                                   headers=bearer(secrets["a"])))
            await until(lambda: slow.calls and slow.calls[0].started.is_set())
            refused = await http.post("/v1/chat/completions", json=chat("fast", False), headers=bearer(secrets["a"]))
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("requests", "too_many_requests_in_flight")
            assert "API key 'a'" in error["message"] and "max_in_flight_requests" in error["message"]
            answered = await http.post("/v1/chat/completions", json=chat("fast", False), headers=bearer(secrets["b"]))
            assert answered.status_code == 200 and not held.done()  # b answered while a is at its limit
            held.cancel()  # a's client goes away: its turn comes back
            await asyncio.gather(held, return_exceptions=True)
            assert slow.calls[0].cancelled
            again = await http.post("/v1/chat/completions", json=chat("fast", False), headers=bearer(secrets["a"]))
            assert again.status_code == 200
        share: FairShare = asgi.state.ingress.fair_share
        assert share.requests.in_flight() == 0 and share.sequences["slow"].in_flight() == 0

    run(main())


def test_without_keys_each_client_address_has_its_own_share(tmp_path: Path) -> None:
    slow = Generator(hang=True)
    asgi, _ = keyed_app(tmp_path, {"slow": slow}, {"max_in_flight_requests": 1, "max_waiting_requests": 0})

    async def main() -> None:
        async with client(asgi, "10.0.0.1") as first, client(asgi, "10.0.0.2") as second:
            held = asyncio.ensure_future(first.post("/v1/chat/completions", json=chat("slow", False)))
            await until(lambda: len(slow.calls) == 1)
            refused = await first.post("/v1/chat/completions", json=chat("slow", False))
            assert refused.status_code == 429 and "client address" in refused.json()["error"]["message"]
            other = asyncio.ensure_future(second.post("/v1/chat/completions", json=chat("slow", False)))
            await until(lambda: len(slow.calls) == 2)  # the other address got in at once
            for task in (held, other):
                task.cancel()
            await asyncio.gather(held, other, return_exceptions=True)

    run(main())


def test_a_stream_whose_client_goes_away_gives_its_turn_and_sequences_back(tmp_path: Path) -> None:
    long, short = Generator(delay_s=0.002), Generator(delay_s=0, tokens=5)
    asgi, secrets = keyed_app(tmp_path, {"long": long, "short": short}, {}, keys={"a": {"max_in_flight": 1}})
    share: FairShare = asgi.state.ingress.fair_share

    async def main() -> None:
        body = {**chat("long", stream=True, max_tokens=200), "n": 3}
        received = await stream_then_disconnect(asgi, secrets["a"], body, 20)
        assert len(received) >= 20 and "[DONE]" not in received[-1]
        assert long.streams[0].cancelled  # the generation stopped with the client
        assert share.requests.in_flight() == 0 and share.sequences["long"].in_flight() == 0
        finished = await stream_then_disconnect(asgi, secrets["a"], chat("short", stream=True, max_tokens=5), 10_000)
        assert finished[-1] == "data: [DONE]"
        assert share.requests.in_flight() == 0 and share.sequences["short"].in_flight() == 0

    run(main())


def test_an_error_gives_the_turn_back(tmp_path: Path) -> None:
    asgi, secrets = keyed_app(tmp_path, {"gen": Generator()}, {}, keys={"a": {"max_in_flight": 1}})

    async def main() -> None:
        async with client(asgi) as http:
            for _ in range(3):
                missing = await http.post("/v1/chat/completions", json=chat("nope", False), headers=bearer(secrets["a"]))
                assert missing.status_code == 404
        assert asgi.state.ingress.fair_share.requests.in_flight() == 0

    run(main())


class CountingGenerator(Generator):
    """Streams of ``tokens`` tokens; counts the streams running at once."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.running = self.most = 0
        self.generate_stream = Method(lambda ids, params: self._add(self.streams, self._counted(tokens)))

    def _counted(self, tokens: int) -> Any:
        outer = self

        class Counted(EngineStream):
            async def __anext__(self) -> Any:
                if self.produced == 0:
                    outer.running += 1
                    outer.most = max(outer.most, outer.running)
                try:
                    return await super().__anext__()
                except StopAsyncIteration:
                    outer.running -= 1
                    raise

        return Counted(0.002, tokens)


def test_a_large_request_runs_in_waves_of_its_share_and_another_tenant_starts_at_once(tmp_path: Path) -> None:
    generator = CountingGenerator(tokens=30)
    asgi, secrets = keyed_app(tmp_path, {"gen": generator}, {"sequence_share": 0.25}, slots=16,
                              keys={"a": {}, "b": {}})  # a tenant's share: 4 of 16 sequences

    async def main() -> None:
        async with client(asgi) as http:
            big = {"model": "gen", "prompt": [f"p{i}" for i in range(6)], "n": 2, "max_tokens": 30, "stream": True}
            flood = asyncio.ensure_future(http.post("/v1/completions", json=big, headers=bearer(secrets["a"])))
            await until(lambda: len(generator.streams) >= 2)
            assert len(generator.streams) == 2  # 2 prompts x n 2: a's share; the other 4 prompts wait
            other = await http.post("/v1/chat/completions", json=chat("gen", False, 30), headers=bearer(secrets["b"]))
            assert other.status_code == 200
            response = await flood
        events = [json.loads(line.removeprefix("data: ")) for line in response.text.split("\n\n")
                  if line.startswith("data: {")]
        finished = {c["index"] for e in events for c in e["choices"] if c.get("finish_reason") == "length"}
        assert finished == {2 * prompt for prompt in range(6)}  # every prompt (the fake answers choice 0)
        assert len(generator.streams) == 6 and generator.most == 2 and len(generator.calls) == 1
        share: FairShare = asgi.state.ingress.fair_share
        assert share.sequences["gen"].in_flight() == 0 and share.requests.in_flight() == 0

    run(main())


def test_a_request_whose_first_sequence_cannot_start_gets_429_for_sequences(tmp_path: Path) -> None:
    generator = Generator(delay_s=0.01, tokens=10_000)
    asgi, secrets = keyed_app(tmp_path, {"gen": generator}, {"max_wait_s": 0.1},
                              keys={"a": {"max_in_flight_sequences": 2}})

    async def main() -> None:
        async with client(asgi) as http:
            body = {**chat("gen", True, 200), "n": 2}
            holding = asyncio.ensure_future(http.post("/v1/chat/completions", json=body, headers=bearer(secrets["a"])))
            await until(lambda: generator.streams)
            refused = await http.post("/v1/chat/completions", json=chat("gen", False), headers=bearer(secrets["a"]))
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("sequences", "too_many_sequences_in_flight")
            assert "max_in_flight_sequences" in error["message"]
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)

    run(main())


def test_work_without_a_request_counts_for_the_internal_tenant() -> None:
    async def main() -> None:
        share = FairShare(FairShareLimits(max_wait_s=0.05), {"gen": 4})

        async def answer() -> str:
            return "ok"

        assert await share.call("gen", 2, answer) == "ok"
        hold = await share.sequences["gen"].acquire("internal", 2, limit=2, wait_s=1)
        with pytest.raises(RateLimitError) as refused:
            await share.call("gen", 1, answer)
        assert "work without a request" in refused.value.message
        hold.release()
        with Turn(tenant_of(None, key_file.ApiKey(id="k", sha256="0" * 64))).current():
            assert await share.calls("gen", 1, [answer, answer]) == ["ok", "ok"]

    run(main())


def test_the_openapi_schema_announces_the_fair_share_429_on_model_routes() -> None:
    schema = build_app(None, IngressConfig()).openapi()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/classify"):
        refusal = schema["paths"][path]["post"]["responses"]["429"]
        assert "too_many_requests_in_flight" in refusal["description"], path
        assert "too_many_sequences_in_flight" in refusal["description"], path
