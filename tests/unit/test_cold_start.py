"""Scale to zero: the config's rules, the cold-start wait of maas/serving/cold_start.py, and the real
ingress app over fake generator handles (tests/unit/ingress_fakes.py): ``/v1/models`` says ``cold``,
a request that finds no replica is answered once one runs, and past the bound gets a 503."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from maas.config import AppConfig, DeploymentOptions
from maas.protocol.errors import ColdStartTimeoutError
from maas.serving.cold_start import (
    OVERRUN_RETRY_S,
    ColdStarts,
    DeploymentState,
    ReplicaCounts,
    zero_scaled,
)
from tests.unit.ingress_fakes import Generator, app, chat

ZERO = {"autoscaling": {"min_replicas": 0, "max_replicas": 1}, "cold_start_timeout_s": 30}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def config(**parts: Any) -> AppConfig:
    return AppConfig.model_validate({
        "generators": [{"name": "gen", "path": "/nowhere", "deployment": parts.pop("generator", {})}],
        "encoder": {"models": [{"name": "enc", "path": "/nowhere"}], "deployment": parts.pop("encoder", {})},
        **parts,
    })


# ------------------------------------------------------------------ config


def test_deployments_with_min_replicas_zero_are_the_scale_to_zero_ones() -> None:
    app_config = config(encoder=ZERO, ner={"deployment": ZERO})  # NER has no model: not started
    assert zero_scaled(app_config) == {"encoder": 30}
    assert app_config.model_deployments() == {"gen": "generator-gen", "enc": "encoder"}
    options = DeploymentOptions.model_validate({
        **ZERO, "autoscaling": {"min_replicas": 0, "downscale_to_zero_delay_s": 600}}).to_serve_options()
    assert "cold_start_timeout_s" not in options
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["downscale_to_zero_delay_s"] == 600


@pytest.mark.parametrize(("parts", "words"), [
    ({"ingress": {"deployment": ZERO}}, "ingress cannot scale to zero"),
    ({"encoder": {**ZERO, "cold_start_timeout_s": 600}}, "below ingress.request_timeout_s"),
    ({"generator": {"autoscaling": {"min_replicas": 0, "max_replicas": 1, "initial_replicas": 2}}},
     "initial_replicas must lie between"),
])
def test_configs_that_would_fail_at_a_cold_start_are_refused(parts: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        config(**parts)


def test_without_a_request_deadline_any_bound_is_allowed() -> None:
    config(encoder={**ZERO, "cold_start_timeout_s": 900}, ingress={"request_timeout_s": None})


# ------------------------------------------------------------------ the wait


def cold_starts(states: dict[str, DeploymentState], clock: Clock, bound: float = 30) -> ColdStarts:
    counts = ReplicaCounts(lambda: dict(states), max_age_s=2, clock=clock)
    return ColdStarts({"encoder": bound}, counts, clock=clock)


class Wake:
    """A deployment's ``ping``: answered once ``replica`` is set (a replica runs)."""

    def __init__(self) -> None:
        self.replica = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        await self.replica.wait()
        return True


def test_a_warm_deployment_is_not_woken_and_a_cold_one_once_for_every_waiting_request() -> None:
    async def main() -> None:
        clock = Clock()
        cold = cold_starts({"encoder": DeploymentState(1)}, clock)
        await cold.refreshed()
        wake = Wake()
        await cold.ready("encoder", wake, "enc")
        await cold.ready("other", wake, "x")  # not a scale-to-zero deployment
        assert wake.calls == 0 and not cold.is_cold("encoder")

        cold.counts._read = lambda: {"encoder": DeploymentState(0)}
        clock.now += 5
        await cold.refreshed()
        assert cold.is_cold("encoder")
        waiting = [asyncio.ensure_future(cold.ready("encoder", wake, "enc")) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert wake.calls == 1 and not any(w.done() for w in waiting)
        clock.now += 12
        wake.replica.set()
        await asyncio.gather(*waiting)
        assert cold.last_cold_start_s["encoder"] == 12 and not cold.is_cold("encoder")

    asyncio.run(main())


def test_past_the_bound_a_503_with_the_rest_of_the_start_and_the_wake_goes_on() -> None:
    async def main() -> None:
        clock, states = Clock(), {"encoder": DeploymentState(0)}
        cold = cold_starts(states, clock, bound=0.05)
        await cold.refreshed()
        cold.last_cold_start_s["encoder"] = 40  # the last cold start took 40 s
        wake = Wake()
        with pytest.raises(ColdStartTimeoutError) as refused:
            await cold.ready("encoder", wake, "enc")
        assert refused.value.status_code == 503 and refused.value.code == "cold_start_timeout"
        assert refused.value.retry_after_s == 40 and "'enc'" in refused.value.message
        clock.now += 39.5
        assert cold.retry_after_s("encoder") == OVERRUN_RETRY_S  # past the expected start
        wake.replica.set()
        states["encoder"] = DeploymentState(1)  # Serve's next read shows the replica
        await asyncio.sleep(0.01)  # the wake went on without any request waiting
        await cold.ready("encoder", wake, "enc")
        assert wake.calls == 1

    asyncio.run(main())


def test_the_first_request_after_a_quiet_while_reads_the_counts_again() -> None:
    async def main() -> None:
        clock, states = Clock(), {"encoder": DeploymentState(1)}
        cold = cold_starts(states, clock, bound=0.05)
        wake = Wake()
        await cold.ready("encoder", wake, "enc")  # running: no wake
        states["encoder"] = DeploymentState(0)  # Serve stopped the last replica while idle
        clock.now += 600
        with pytest.raises(ColdStartTimeoutError):  # bounded, not sent to the handle unbounded
            await cold.ready("encoder", wake, "enc")
        assert wake.calls == 1

    asyncio.run(main())


def test_a_waiting_request_that_is_cancelled_leaves_the_wake_to_the_others() -> None:
    async def main() -> None:
        cold = cold_starts({"encoder": DeploymentState(0)}, Clock())
        await cold.refreshed()
        wake = Wake()
        first = asyncio.ensure_future(cold.ready("encoder", wake, "enc"))
        second = asyncio.ensure_future(cold.ready("encoder", wake, "enc"))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        wake.replica.set()
        await second
        assert wake.calls == 1

    asyncio.run(main())


def test_counts_are_read_at_most_once_a_period_and_a_failed_read_keeps_the_last() -> None:
    async def main() -> None:
        clock, reads = Clock(), []

        def read() -> dict[str, DeploymentState]:
            reads.append(clock.now)
            if len(reads) == 2:
                raise RuntimeError("controller busy")
            return {"encoder": DeploymentState(len(reads))}

        counts = ReplicaCounts(read, max_age_s=2, clock=clock)
        await asyncio.gather(counts.refresh(), counts.refresh())
        await counts.refresh()
        assert reads == [100.0] and counts.running("encoder") == 1
        clock.now += 2
        await counts.refresh()
        assert counts.running("encoder") == 1  # the failed read kept the last one
        clock.now += 2
        await counts.refresh()
        assert counts.running("encoder") == 3

    asyncio.run(main())


def test_health_lists_cold_deployments_as_healthy_and_failing_ones_apart() -> None:
    async def main() -> None:
        counts = ReplicaCounts(lambda: {"encoder": DeploymentState(0), "ner": DeploymentState(1, "UNHEALTHY"),
                                        "classifier": DeploymentState(1, "UPSCALING")}, max_age_s=2)
        cold = ColdStarts({"encoder": 30, "ner": 30, "classifier": 30}, counts)
        assert await cold.health() == (["encoder"], ["ner"])

    asyncio.run(main())


# ------------------------------------------------------------------ the ingress over HTTP


def test_a_cold_generator_is_listed_cold_and_its_first_request_answered(tmp_path: Path) -> None:
    generator = Generator(tokens=2)
    generator.awake.clear()  # scaled to zero: the ping waits for a replica
    counts = ReplicaCounts(lambda: {"generator-gen": DeploymentState(0)}, max_age_s=60)
    asgi, secret = app(tmp_path, {"gen": generator}, cold=ColdStarts({"generator-gen": 30}, counts))
    headers = {"Authorization": f"Bearer {secret}"}

    async def main() -> None:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as http:
            models = (await http.get("/v1/models")).json()["data"]
            assert [(m["id"], m["status"]) for m in models] == [("gen", "cold")]
            answer = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat("gen", False)))
            streamed = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat("gen", True, 2)))
            await asyncio.sleep(0.2)
            assert not answer.done() and not streamed.done() and generator.pings == 1
            assert not generator.calls  # nothing sent to the engine before a replica runs
            generator.awake.set()
            assert (await answer).status_code == 200 and (await streamed).status_code == 200
            models = (await http.get("/v1/models")).json()["data"]
            assert models[0]["status"] == "ready"

    asyncio.run(main())


def test_a_cold_start_past_its_bound_is_a_503_with_retry_after_and_the_openai_body(tmp_path: Path) -> None:
    generator = Generator()
    generator.awake.clear()
    counts = ReplicaCounts(lambda: {"generator-gen": DeploymentState(0)}, max_age_s=60)
    asgi, secret = app(tmp_path, {"gen": generator}, cold=ColdStarts({"generator-gen": 0.1}, counts))

    async def main() -> None:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            refused = await http.post("/v1/chat/completions", json=chat("gen", False),
                                      headers={"Authorization": f"Bearer {secret}"})
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
            error = refused.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert (error["type"], error["code"], error["param"]) == (
                "service_unavailable", "cold_start_timeout", "model")
        share = asgi.state.ingress.fair_share
        assert share.requests.in_flight() == 0 and share.sequences["gen"].in_flight() == 0

    asyncio.run(main())


def test_maas_status_says_cold_for_a_deployment_without_replicas() -> None:
    from maas.deploy import DeploymentReplicas, format_status, replicas_text

    assert replicas_text({}, "HEALTHY") == "none (cold: scaled to zero)"
    assert replicas_text({}, "DEPLOY_FAILED") == "none"
    assert replicas_text({"RUNNING": 1, "STARTING": 1}, "UPSCALING") == "RUNNING=1, STARTING=1"
    assert "cold" in format_status([DeploymentReplicas("maas", "translator", "HEALTHY", 0)])
