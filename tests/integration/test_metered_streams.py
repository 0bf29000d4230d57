"""Streams charged as they are produced and bounded in time, over real HTTP with API keys, on the
session's vLLM generator.

A client that reads part of a stream and drops the connection is charged the tokens produced
(its key's token count, shared by the app's ingress replicas, shows them), and its generation is
aborted (the engine's running count drops to 0, and nothing more is charged afterwards). A stream
past ``ingress.max_stream_s`` ends with a ``stream_timeout`` error event and ``data: [DONE]``,
and its generation is aborted too.

The app under test is the production ingress (``MaasIngress``) with a key file and a small
``max_stream_s``, whose generator and tokenizer handles are the session app's deployments: no
second vLLM engine starts (one ingress replica does, a few seconds), and the ingress code that
meters, limits and cancels is the one in ``build_app``'s graph. The generator is the real engine.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from maas.config import AppConfig
from maas.edge import key_file
from maas.edge.auth import SharedRateLimiter
from tests.conftest import GENERATOR, wait_healthy

pytestmark = pytest.mark.integration

APP = "metered"
PREFIX = "/metered"
MAX_STREAM_S = 5.0
MAX_TOKENS = 256  # the session generator's max_tokens_limit: with ignore_eos, well past 5 s here
MESSAGES = [{"role": "user", "content": "Write a very long essay about the sea."}]
LONG_STREAM = {"model": GENERATOR, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "ignore_eos": True,
               "temperature": 0.8, "stream": True}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("metered-keys") / "api-keys.yaml"
    return path, {
        "dropper": key_file.add_key(path, "dropper", [GENERATOR], tpm=20),
        "streamer": key_file.add_key(path, "streamer", [GENERATOR], tpm=1_000_000),
    }


@pytest.fixture(scope="module")
def metered(service: str, app_config: AppConfig, secrets: tuple[Path, dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A keyed ingress with ``max_stream_s`` = 5 on the session app's generator and tokenizer."""
    from ray import serve

    from deployments.ingress import MaasIngress
    from pipelines.app import APP_NAME, generator_deployment_name

    config = AppConfig.model_validate({
        "generators": [app_config.generators[0].model_dump()],
        "ingress": {"api_keys_file": str(secrets[0]), "max_stream_s": MAX_STREAM_S,
                    # may run two replicas: each key's counts then live in one limiter actor, which
                    # the test reads (a high target keeps it at one)
                    "deployment": {"num_cpus": 0.05, "autoscaling": {
                        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1000}}},
        "registry_dir": app_config.registry_dir,
        "batch_dir": str(tmp_path_factory.mktemp("metered-batches")),
    })
    tokenizer = serve.get_deployment_handle("tokenizer", APP_NAME)
    generator = serve.get_deployment_handle(generator_deployment_name(GENERATOR), APP_NAME)
    app = MaasIngress.options(**config.ingress.deployment.to_serve_options()).bind(
        config, tokenizer, {GENERATOR: generator}, None, None)
    serve.run(app, name=APP, route_prefix=PREFIX, blocking=False)
    wait_healthy(service + PREFIX, 180)
    yield service + PREFIX
    serve.delete(APP)
    with contextlib.suppress(ValueError):  # the limiter actor is detached: it outlives the app
        ray.kill(limiter())


def limiter() -> Any:
    return ray.get_actor(SharedRateLimiter(APP).actor_name, namespace=SharedRateLimiter.NAMESPACE)


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
        metered: str, secrets: tuple[Path, dict[str, str]], client: httpx.Client) -> None:
    bearer = {"Authorization": f"Bearer {secrets[1]['dropper']}"}
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
        metered: str, secrets: tuple[Path, dict[str, str]], client: httpx.Client) -> None:
    bearer = {"Authorization": f"Bearer {secrets[1]['streamer']}"}
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
