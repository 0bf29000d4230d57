"""Cache-aware routing on 2 real generator replicas (``long``: its own application, two vLLM starts).

A module fixture deploys the application ``routing`` (route prefix ``/routing``) on the Serve proxy
(the session's, or its own when this module runs alone): a generator with 2 replicas, ``prefix_routing`` on and ``cache_stats`` on (vLLM's own
prefix-cache counters reach ``/metrics``), the tokenizer and an ingress. The replicas start one at
a time (deployed with 1, then scaled to 2). Which replica served a request is read from vLLM's
counters: a prompt its replica has seen before is found in that replica's prefix cache (hits > 0),
a replica that never saw it finds nothing (hits 0).

What is shown, over HTTP through the whole path (proxy, ingress, Serve's request router, engine):

* the same prompt sent again goes to the replica that holds it: each of 5 repeats is a cache hit
  (with Serve's default router each repeat picks one of the 2 replicas at random, and all 5 hit
  only if none went to the other replica first);
* ``x-session-id`` pins a request to its session's replica even when another replica holds its
  prefix: the prompt cached on session 1's replica is a miss for session 2 (its replica never saw
  it), then a hit for each session on its own replica.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import STARTUP_TIMEOUT_S, free_port, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.long]

APP = "routing"
PREFIX = "/routing"
GENERATOR = "routing-smollm2"  # its own name: its counters stay apart from the session app's


def routing_config(smollm2_dir: Path) -> dict[str, Any]:
    return {
        "generators": [{
            "name": GENERATOR, "path": str(smollm2_dir), "max_model_len": 1024, "kv_cache_gib": 1,
            "cpu_threads_bind": "nobind", "cache_stats": True, "prefix_routing": {"enabled": True},
            "deployment": {"num_replicas": 2, "num_cpus": 0.2, "max_ongoing_requests": 16},
        }],
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        "ingress": {"deployment": {"num_cpus": 0.05}},
    }


def proxy_url() -> str:
    """The Serve proxy of this Ray: the session's when the session service runs, else a new one
    (this module alone needs no session service)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()}, proxy_location="HeadOnly")
    return f"http://127.0.0.1:{_get_global_client().http_config.port}"


@pytest.fixture(scope="module")
def routing(ray_cluster: str, smollm2_dir: Path) -> Iterator[str]:
    """The ``routing`` application on the Serve proxy; yields its base URL."""
    from ray import serve

    from benchmarks.prefix_routing import with_generator_replicas
    from maas.config import AppConfig
    from pipelines.app import build_app

    base = proxy_url() + PREFIX
    app = build_app(AppConfig.model_validate(routing_config(smollm2_dir)))
    serve.run(with_generator_replicas(app, 1), name=APP, route_prefix=None)
    serve.run(app, name=APP, route_prefix=PREFIX, blocking=False)
    try:
        wait_healthy(base, STARTUP_TIMEOUT_S)
        wait_replicas(2)
        yield base
    finally:
        serve.delete(APP)


def wait_replicas(count: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while len(replica_ids()) < count:
        assert time.monotonic() < deadline, f"{count} generator replicas not running"
        time.sleep(2)


def replica_ids() -> list[str]:
    """The generator's RUNNING replicas as Serve's router names them (``ReplicaID.to_full_id_str``)."""
    from ray.serve.context import _get_global_client

    from pipelines.app import generator_deployment_name

    name = generator_deployment_name(GENERATOR)
    details = _get_global_client().get_serve_details()
    replicas = details["applications"].get(APP, {}).get("deployments", {}).get(name, {}).get("replicas", [])
    return [f"SERVE_REPLICA::{APP}#{name}#{r['replica_id']}" for r in replicas if r["state"] == "RUNNING"]


def cache_counts(base: str) -> tuple[float, float]:
    """This generator's prefix-cache (queries, hits), in prompt tokens, over both replicas."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    values = []
    for name in ("maas_prefix_cache_queries_total", "maas_prefix_cache_hits_total"):
        line = next((x for x in text.splitlines() if x.startswith(f'{name}{{model="{GENERATOR}"}}')), None)
        values.append(float(line.rsplit(" ", 1)[1]) if line else 0.0)
    return values[0], values[1]


def hits_of(base: str, prompt: str, session: str | None = None) -> float:
    """Send one chat and return the prompt tokens vLLM found in its prefix cache for it."""
    queries, hits = cache_counts(base)
    headers = {"x-session-id": session} if session else {}
    body = {"model": GENERATOR, "messages": [{"role": "user", "content": prompt}], "max_tokens": 2,
            "temperature": 0}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while (now := cache_counts(base))[0] <= queries:  # the replica's counts arrive a moment later
        assert time.monotonic() < deadline, "the prefix-cache counts did not arrive"
        time.sleep(0.5)
    return now[1] - hits


def long_prompt(topic: str) -> str:
    """About 400 tokens: several of vLLM's 128-token CPU cache blocks."""
    return " ".join(f"Note {i} about {topic}: the shipment waits at berth {i} for customs." for i in range(30))


def test_a_repeated_prompt_goes_to_the_replica_that_holds_it(routing: str) -> None:
    prompt = long_prompt("repeats")
    assert hits_of(routing, prompt) == 0
    repeats = [hits_of(routing, prompt) for _ in range(5)]
    assert all(hits > 0 for hits in repeats), repeats


def test_a_session_is_pinned_to_its_replica(routing: str) -> None:
    from maas.serving.prefix_affinity import session_replica

    replicas = replica_ids()
    owners = {f"s{i}": session_replica(f"s{i}", replicas) for i in range(20)}
    first = "s0"
    second = next(s for s, owner in owners.items() if owner != owners[first])
    prompt = long_prompt("sessions")
    assert hits_of(routing, prompt, first) == 0
    assert hits_of(routing, prompt, second) == 0  # its own replica, though the other holds the prompt
    assert hits_of(routing, prompt, second) > 0
    assert hits_of(routing, prompt, first) > 0
