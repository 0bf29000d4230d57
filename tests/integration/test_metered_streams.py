"""Streams charged as they are produced and bounded in time, over real HTTP with API keys, on the
session's vLLM generator.

A client that reads part of a stream and drops the connection is charged the tokens produced
(its key's token count, shared by the app's ingress replicas, shows them), and its generation is
aborted (the engine's running count drops to 0, and nothing more is charged afterwards). A stream
past ``ingress.max_stream_s`` ends with a ``stream_timeout`` error event and ``data: [DONE]``,
and its generation is aborted too.

The app under test is the session's keyed ingress (``keyed_service`` in ``tests/conftest.py``: the
production ``MaasIngress`` with a key file and ``max_stream_s`` = 5, whose generator and tokenizer
handles are the session app's deployments): no second vLLM engine starts, and the ingress code that
meters, limits and cancels is the one in ``build_app``'s graph. The generator is the real engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray

from maas.edge.auth import SharedRateLimiter
from tests.conftest import GENERATOR, KEYED_APP, KeyedService

pytestmark = pytest.mark.integration

MAX_TOKENS = 256  # the session generator's max_tokens_limit: with ignore_eos, well past 5 s here
MESSAGES = [{"role": "user", "content": "Write a very long essay about the sea."}]
LONG_STREAM = {"model": GENERATOR, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "ignore_eos": True,
               "temperature": 0.8, "stream": True}


def limiter() -> Any:
    return ray.get_actor(SharedRateLimiter(KEYED_APP).actor_name, namespace=SharedRateLimiter.NAMESPACE)


def tokens_charged(key_id: str) -> int:
    return ray.get(limiter().usage.remote(key_id))[1]


def running() -> int:
    """Requests the session's vLLM engine is running."""
    from ray import serve

    from pipelines.app import APP_NAME, generator_deployment_name

    generator = serve.get_deployment_handle(generator_deployment_name(GENERATOR), APP_NAME)
    return generator.running_requests.remote().result()


def wait_engine_idle(timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while running() > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running() == 0


def prompt_tokens(client: httpx.Client) -> int:
    response = client.post("/v1/tokenize", json={"model": GENERATOR, "messages": MESSAGES})
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def events(lines: Iterator[str]) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent-events stream."""
    for line in lines:
        if line.startswith("data: "):
            yield line.removeprefix("data: ")


def test_a_dropped_stream_pays_for_its_tokens_and_its_generation_stops(
        keyed_service: KeyedService, client: httpx.Client) -> None:
    metered, bearer = keyed_service.url, keyed_service.bearer("dropper")
    prompt = prompt_tokens(client)
    wait_engine_idle()
    read = 0
    with httpx.stream("POST", f"{metered}/v1/chat/completions", json=LONG_STREAM, headers=bearer,
                      timeout=60) as response:
        assert response.status_code == 200, response.read()
        payloads = events(response.iter_lines())  # held: closing it would close the connection
        for data in payloads:  # a few tokens: well within max_stream_s
            read += bool(json.loads(data)["choices"][0]["delta"].get("content"))  # a token at least
            if read == 4:
                break
        assert running() == 1, "the generation ended before the client went away"
    # the connection is closed: the generation is aborted, and what it produced is charged
    wait_engine_idle()
    charged = tokens_charged("dropper")
    assert prompt + read <= charged < prompt + MAX_TOKENS, (prompt, read, charged)
    time.sleep(2)
    assert tokens_charged("dropper") == charged  # nothing more produced, nothing more charged
    # the key's 20 tokens a minute are spent: its next request waits
    again = httpx.post(f"{metered}/v1/chat/completions", json={**LONG_STREAM, "stream": False},
                       headers=bearer, timeout=60)
    assert again.status_code == 429, again.text
    assert again.json()["error"]["type"] == "tokens" and int(again.headers["Retry-After"]) >= 1


def test_a_stream_past_max_stream_s_ends_with_an_error_event_and_stops(
        keyed_service: KeyedService, client: httpx.Client) -> None:
    metered, bearer = keyed_service.url, keyed_service.bearer("streamer")
    prompt = prompt_tokens(client)
    wait_engine_idle()
    with httpx.stream("POST", f"{metered}/v1/chat/completions", json=LONG_STREAM, headers=bearer,
                      timeout=60) as response:
        assert response.status_code == 200, response.read()
        payloads = list(events(response.iter_lines()))
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert (error["code"], error["type"]) == ("stream_timeout", "timeout"), error
    assert set(error) == {"message", "type", "param", "code"}
    tokens = [json.loads(p) for p in payloads[:-2]]
    assert tokens and all("choices" in chunk for chunk in tokens)
    assert not any(chunk["choices"][0].get("finish_reason") for chunk in tokens)  # cut off, not finished
    wait_engine_idle()
    charged = tokens_charged("streamer")
    assert prompt < charged < prompt + MAX_TOKENS, (prompt, charged)  # aborted: not all 256 produced
