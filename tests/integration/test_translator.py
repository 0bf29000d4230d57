"""The translator in a real local Ray, over HTTP and through the application handle.

Its own small maas application (translator, tokenizer and ingress; no generator, so a pair the
translator lacks is a 400): English <-> Portuguese answers equal to the engine's own, batching
across concurrent requests (seen in the ``maas_model_calls`` / ``maas_batch_size`` metrics),
health, ``/v1/models``, and the OpenAI error bodies of bad input.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from maas.config import AppConfig, TranslatorConfig
from maas.endpoints.tasks.protocol import TranslateRequest
from maas.engines.translation import TranslatorEngine
from tests.conftest import free_port, settled_metrics, wait_healthy

pytestmark = pytest.mark.integration

APP = "translate-test"
PREFIX = "/translate-test"
MODEL = "firefox-translations-en-pt"
MAX_CHARS = 1000
ENGLISH = ["The train to the airport leaves every fifteen minutes.", "The cat is sleeping on the sofa.",
           "We need to clean the house before the guests arrive.", "The store is closed on holidays.",
           "My sister is learning to play the guitar.", "How much does this shirt cost?",
           "The government announced new measures to reduce inflation.", "Thank you for your help.",
           "Heavy rain caused flooding in several cities.", "The museum reopened after two years.",
           "Please turn off the lights when you leave.", "Our flight was delayed by two hours.",
           "She bought fresh flowers for her grandmother.", "The bus stop is in front of the school.",
           "Farmers are worried about the lack of rain.", "The stock market closed higher on Friday."]


def translator_config() -> TranslatorConfig:
    return TranslatorConfig.model_validate({
        "models": [{"name": MODEL}], "max_chars": MAX_CHARS,
        "batching": {"max_batch_size": 32, "batch_wait_timeout_s": 0.1},
        "deployment": {"num_cpus": 0.1, "max_ongoing_requests": 128},
    })


def serve_port() -> int:
    from ray.serve.context import _get_global_client

    return int(_get_global_client().http_config.port)


@pytest.fixture(scope="module")
def base_url(ray_cluster: str) -> Iterator[str]:
    """The application on Serve's proxy (started here, on a free port, if Serve is not running)."""
    from ray import serve

    from pipelines.app import build_app
    from tests.integration.test_ner import serve_is_running

    started_here = not serve_is_running()
    if started_here:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()}, proxy_location="HeadOnly")
    config = AppConfig.model_validate({
        "translator": translator_config().model_dump(),
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        "ingress": {"deployment": {"num_cpus": 0.05}},
    })
    serve.run(build_app(config), name=APP, route_prefix=PREFIX, blocking=False)
    url = f"http://127.0.0.1:{serve_port()}{PREFIX}"
    wait_healthy(url, 180)
    yield url
    serve.delete(APP)
    if started_here:
        serve.shutdown()


@pytest.fixture(scope="module")
def engine() -> TranslatorEngine:
    return TranslatorEngine(translator_config())


def translate(url: str, text: str, source: str, target: str, **extra: Any) -> httpx.Response:
    body = {"input": text, "source_language": source, "target_language": target, **extra}
    return httpx.post(f"{url}/v1/pipelines/translate", json=body, timeout=60)


def test_english_and_portuguese_both_ways(base_url: str, engine: TranslatorEngine) -> None:
    text = "The children were playing in the garden. It was a sunny day."
    to_pt = translate(base_url, text, "English", "Portuguese")
    assert to_pt.status_code == 200, to_pt.text
    body = to_pt.json()
    assert (body["engine"], body["model"], body["pair"], body["object"]) == (
        "translator", MODEL, "en-pt", "pipeline.translation")
    assert body["output"] == engine.translate(MODEL, "en-pt", [text])[0].text
    assert "no jardim" in body["output"] and body["usage"]["prompt_tokens"] > 0
    back = translate(base_url, body["output"], "pt-BR", "en").json()
    assert (back["engine"], back["pair"]) == ("translator", "pt-en") and "garden" in back["output"]


def test_models_and_health_list_the_translator(base_url: str) -> None:
    cards = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
    assert {"id": MODEL, "capability": "translate", "pairs": ["en-pt", "pt-en"]}.items() <= cards[0].items()
    health = httpx.get(f"{base_url}/health", timeout=30).json()
    assert "translator" in health["deployments"]


def test_handle_uses_the_translator(base_url: str) -> None:
    from ray import serve

    request = TranslateRequest(input="Thank you for your help.", source_language="en", target_language="pt")
    response = serve.get_app_handle(APP).translate.remote(request).result(timeout_s=60)
    over_http = translate(base_url, request.input, "en", "pt").json()
    assert (response.engine, response.output) == ("translator", over_http["output"])


def test_concurrent_requests_share_engine_calls(base_url: str, engine: TranslatorEngine) -> None:
    settled_metrics(base_url)  # the earlier tests' translations are counted before `before`
    before = batch_metrics(base_url)

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"source_language": "en", "target_language": "pt"}
            return await asyncio.gather(*(client.post(f"{base_url}/v1/pipelines/translate",
                                                      json={**body, "input": t}) for t in ENGLISH))

    responses = asyncio.run(all_at_once())
    after = batch_metrics(base_url, texts_at_least=before[1] + len(ENGLISH))
    assert [r.json()["output"] for r in responses] == [t.text for t in engine.translate(MODEL, "en-pt", ENGLISH)]
    calls, texts = after[0] - before[0], after[1] - before[1]
    assert texts == len(ENGLISH)
    assert 1 <= calls < len(ENGLISH), f"{calls} engine calls for {len(ENGLISH)} requests"


def batch_metrics(url: str, texts_at_least: float = 0, timeout_s: float = 10) -> tuple[float, float]:
    """Engine calls and texts translated so far for en-pt (``maas_model_calls``, batch size sum).

    Replicas record metrics with fire-and-forget calls: wait until ``texts_at_least`` are counted.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        text = httpx.get(f"{url}/metrics", timeout=30).text
        labels = rf'\{{deployment="translator",model="{MODEL}:en-pt"\}}'
        found = [re.search(rf"^{name}{labels} (\S+)$", text, re.M) for name in
                 ("maas_model_calls_total", "maas_batch_size_sum")]
        calls, texts = (float(v.group(1)) if v else 0.0 for v in found)
        if texts >= texts_at_least or time.monotonic() > deadline:
            return calls, texts
        time.sleep(0.5)


@pytest.mark.parametrize(("fields", "message"), [
    ({"input": "Hello", "source_language": "English", "target_language": "French"},
     "The language pair 'en-fr' is not served by the translator. Pairs served: en-pt, pt-en."),
    ({"input": "   ", "source_language": "en", "target_language": "pt"}, "input is empty."),
    ({"input": "x" * (MAX_CHARS + 1), "source_language": "en", "target_language": "pt"},
     f"input has {MAX_CHARS + 1} characters; the translator accepts at most {MAX_CHARS}."),
])
def test_bad_input_is_a_400_with_the_openai_body(base_url: str, fields: dict[str, str], message: str) -> None:
    response = translate(base_url, fields["input"], fields["source_language"], fields["target_language"])
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["message"], error["type"]) == (message, "invalid_request_error")
    assert "Traceback" not in response.text


def test_empty_input_is_a_400(base_url: str) -> None:
    response = translate(base_url, "", "en", "pt")
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
