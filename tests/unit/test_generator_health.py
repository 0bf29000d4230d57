"""Generator health: a busy engine proves itself by its progress; a stalled one gets probed.

The vLLM engine is replaced by a stub here only to inject the states (busy, stalled, idle) that
are slow or impossible to reach on demand with the real engine.
"""

from __future__ import annotations

import asyncio
import time

from maas.engines import generator
from maas.engines.generator import GeneratorEngine, resolve_dtype


class _StubEngine:
    def __init__(self, unfinished: int) -> None:
        self.unfinished = unfinished
        self.health_checks = 0

    def get_num_unfinished_requests(self) -> int:
        return self.unfinished

    async def check_health(self) -> None:
        self.health_checks += 1


def _engine(unfinished: int, last_output_age_s: float) -> tuple[GeneratorEngine, list[int]]:
    engine = object.__new__(GeneratorEngine)
    engine.engine = _StubEngine(unfinished)
    engine.last_output_at = time.monotonic() - last_output_age_s
    probes: list[int] = []

    async def probe(prompt_token_ids, params, request_id=None):  # noqa: ANN001, ANN202
        probes.append(params.max_tokens)
        yield None

    engine.generate = probe  # type: ignore[method-assign]
    return engine, probes


def test_busy_engine_with_recent_output_needs_no_probe() -> None:
    engine, probes = _engine(unfinished=32, last_output_age_s=1.0)
    asyncio.run(engine.ping())
    assert probes == [] and engine.engine.health_checks == 1


def test_stalled_or_idle_engine_must_answer_a_probe() -> None:
    stalled, probes = _engine(unfinished=32, last_output_age_s=generator.PROGRESS_PROOF_S + 1)
    asyncio.run(stalled.ping())
    assert probes == [1]
    idle, probes = _engine(unfinished=0, last_output_age_s=0.5)
    asyncio.run(idle.ping())
    assert probes == [1]


def test_auto_dtype_is_float32_on_a_cpu() -> None:
    assert resolve_dtype("bfloat16", on_gpu=False) == "bfloat16"
    assert resolve_dtype("auto", on_gpu=True) == "auto"
    assert resolve_dtype("auto", on_gpu=False) == "float32"  # whatever the CPU's flags


def test_health_cache_reuses_only_a_recent_pass() -> None:
    from deployments.health import HealthCache

    cache = HealthCache(ttl_s=60)
    assert not cache.fresh()  # nothing passed yet: run the real check
    cache.passed()
    assert cache.fresh()
    assert not HealthCache(ttl_s=0).fresh()
