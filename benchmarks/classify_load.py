"""A small async load generator for ``/v1/classify`` (aiohttp, closed loop).

``concurrency`` workers share a fixed, seeded list of requests (one short text each) and send
them back to back; the result is requests/s and latency percentiles over the whole level.

aiohttp, not httpx: on this 2-core machine httpx's ``AsyncClient`` itself capped a trivial
FastAPI route at ~114 requests/s with 64 concurrent clients (aiohttp: ~3,900/s; 829 vs 2,795
at one client), which would have hidden the servers' differences. vLLM's load generator uses
aiohttp too.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import asdict, dataclass

import aiohttp

TEXTS: tuple[str, ...] = (
    "I love this phone, the battery lasts forever!",
    "The train is late again and nobody tells us why.",
    "The meeting is moved to three o'clock on Thursday.",
    "What a fantastic concert, the band was on fire tonight.",
    "My order arrived broken and support never answered.",
    "The library opens at nine and closes at five.",
    "Honestly the best pizza I have had in years.",
    "This update made the app slower and it crashes all the time.",
    "The weather tomorrow will be cloudy with light wind.",
    "Thanks to everyone who came, we had a wonderful evening!",
    "I waited two hours on hold, worst service ever.",
    "The report has twelve pages and three appendices.",
)


@dataclass
class ClassifyLevelResult:
    """What one concurrency level measured."""

    concurrency: int
    num_requests: int
    completed: int
    failed: int
    duration_s: float
    requests_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def make_requests(model: str, count: int, seed: int) -> list[dict[str, str]]:
    """``count`` request bodies with texts drawn from :data:`TEXTS` by a seeded generator."""
    rng = random.Random(seed)
    return [{"model": model, "input": rng.choice(TEXTS)} for _ in range(count)]


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (linear interpolation); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def _worker(session: aiohttp.ClientSession, url: str, queue: asyncio.Queue,
                  latencies: list[float], failures: list[str]) -> None:
    while True:
        try:
            body = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        start = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                response.raise_for_status()
            latencies.append(time.perf_counter() - start)
        except (TimeoutError, aiohttp.ClientError) as exc:
            failures.append(repr(exc))


async def run_level(base_url: str, model: str, concurrency: int, num_requests: int, seed: int,
                    num_warmups: int = 0, timeout_s: float = 300.0) -> ClassifyLevelResult:
    """Send ``num_requests`` classify requests with ``concurrency`` workers; measure them."""
    url = f"{base_url}/v1/classify"
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for body in make_requests(model, num_warmups, seed + 1):
            async with session.post(url, json=body) as response:
                response.raise_for_status()
        queue: asyncio.Queue = asyncio.Queue()
        for body in make_requests(model, num_requests, seed):
            queue.put_nowait(body)
        latencies: list[float] = []
        failures: list[str] = []
        start = time.perf_counter()
        await asyncio.gather(*(_worker(session, url, queue, latencies, failures)
                               for _ in range(concurrency)))
        duration = time.perf_counter() - start
    return summarize(concurrency, num_requests, latencies, len(failures), duration)


def summarize(concurrency: int, num_requests: int, latencies: list[float], failed: int,
              duration: float) -> ClassifyLevelResult:
    ms = [1000 * x for x in latencies]
    return ClassifyLevelResult(
        concurrency=concurrency, num_requests=num_requests, completed=len(latencies),
        failed=failed, duration_s=round(duration, 3),
        requests_per_s=round(len(latencies) / duration, 3) if duration > 0 else 0.0,
        latency_p50_ms=round(percentile(ms, 50), 2), latency_p99_ms=round(percentile(ms, 99), 2),
        latency_mean_ms=round(statistics.fmean(ms), 2) if ms else 0.0,
    )


def run(base_url: str, model: str, concurrency: int, num_requests: int, seed: int,
        num_warmups: int = 0) -> ClassifyLevelResult:
    """Blocking wrapper of :func:`run_level`."""
    return asyncio.run(run_level(base_url, model, concurrency, num_requests, seed, num_warmups))
