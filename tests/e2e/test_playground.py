"""The playground page in a real headless Chromium (Debian's), driven by Playwright.

Two layers:

* the page alone, from a tiny local static server that serves the HTML and proxies nothing;
  the API answers are stubbed in the browser (``page.route``) so the page's own logic (model
  lists, SSE parsing, bars, highlighting, errors, API key) is checked in seconds;
* the page served by the real service at ``/`` against the real models (vLLM streaming,
  the classifier, spaCy NER through ``/v1/pipelines/entities``); it also refreshes
  ``docs/playground.png``. Should ``GET /`` be a 404 (an ingress without the page), it skips,
  or with ``MAAS_PLAYGROUND_PREVIEW=1`` serves the same page from a tiny extra Serve app on the
  same proxy (same origin) instead.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from maas.endpoints.service.playground import playground_html
from tests.conftest import CLASSIFIER, GENERATOR, NER

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "docs" / "playground.png"
PREVIEW_PREFIX = "/playground-preview"
APPLE = "Apple is looking at buying U.K. startup for $1 billion"
MODELS = {"object": "list", "data": [
    {"id": "llm", "capability": "generate"}, {"id": "sentiment", "capability": "classify"},
    {"id": "minilm", "capability": "embed"}, {"id": "en-ner", "capability": "entities"}]}

# Counts the DOM updates of #output from now on (each streamed chunk is one).
COUNT_UPDATES = """() => {
  window.outputUpdates = 0;
  new MutationObserver((records) => { window.outputUpdates += records.length; })
    .observe(document.getElementById("output"), {childList: true, characterData: true, subtree: true});
}"""


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless (no browser download)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    context.close()


class PageOnly(BaseHTTPRequestHandler):
    """Serves the playground at ``/``; everything else is a plain-text 404."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        found = self.path == "/"
        body = (playground_html() if found else "not found").encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8" if found else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    """The page from a local static server on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PageOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def stub_api(page: Any, seen: list[dict[str, Any]]) -> None:
    """Answer the page's API calls in the browser, recording each request."""

    def answer(route: Any) -> None:
        request = route.request
        path = request.url.split("/", 3)[3]
        seen.append({"path": path, "headers": request.headers,
                     "body": json.loads(request.post_data) if request.post_data else None})
        route.fulfill(**STUBS.get(path, STUBS["404"]))

    page.route("**/v1/**", answer)


def sse(*events: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def chat_chunk(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


STUBS: dict[str, dict[str, Any]] = {
    "v1/models": {"json": MODELS},
    "v1/chat/completions": {"body": sse(chat_chunk("Hel"), chat_chunk("lo"), chat_chunk("!")),
                            "content_type": "text/event-stream"},
    "v1/classify": {"json": {"object": "list", "model": "sentiment", "data": [{
        "index": 0, "label": "positive", "probs": [0.1, 0.2, 0.7],
        "labels": ["negative", "neutral", "positive"], "num_classes": 3}]}},
    "v1/embeddings": {"status": 404, "json": {"error": {
        "message": "The model 'minilm' is resting.", "type": "invalid_request_error"}}},
    "v1/pipelines/entities": {"json": {"object": "list", "model": "en-ner", "data": [{"index": 0, "entities": [
        {"text": "Apple", "label": "ORG", "start_char": 2, "end_char": 7},
        {"text": "U.K.", "label": "GPE", "start_char": 29, "end_char": 33}]}],
        "usage": {"prompt_tokens": 12}}},
    "404": {"status": 404, "body": "nope", "content_type": "text/plain"},
}


def run_task(page: Any, task: str, text: str, model: str | None = None, timeout_ms: int = 20_000) -> None:
    """Pick a task (and model), type a text, click Run, wait until the run is over."""
    page.select_option("#task", task)
    if model is not None:
        page.select_option("#model", model)
    page.fill("#text", text)
    page.click("#run")
    page.wait_for_function("() => document.getElementById('status').textContent !== 'running…'"
                           " && !document.getElementById('run').disabled", timeout=timeout_ms)


def error_text(page: Any) -> str:
    return page.inner_text("#error") if page.is_visible("#error") else ""


# ----------------------------------------------------------------------------- the page alone


def test_page_without_api_shows_the_error(page: Any, static_url: str) -> None:
    page.goto(static_url)
    page.wait_for_selector("#error", state="visible")
    assert "Could not list models: HTTP 404" in error_text(page)
    assert page.inner_text("#model") == "(no model)"


def test_models_per_task_and_api_key(page: Any, static_url: str) -> None:
    seen: list[dict[str, Any]] = []
    stub_api(page, seen)
    page.goto(static_url)
    page.wait_for_selector("#model option[value=llm]", state="attached")
    options = {}
    for task in ("chat", "completion", "classify", "embeddings", "entities"):
        page.select_option("#task", task)
        options[task] = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == {"chat": ["llm"], "completion": ["llm"], "classify": ["sentiment"],
                       "embeddings": ["minilm"], "entities": ["en-ner"]}
    assert "authorization" not in seen[0]["headers"]
    page.fill("#apiKey", "sk-test")
    page.dispatch_event("#apiKey", "change")
    page.wait_for_function("() => localStorage.getItem('maas.apiKey') === 'sk-test'")
    page.reload()
    assert page.input_value("#apiKey") == "sk-test"
    page.wait_for_selector("#model option[value=llm]", state="attached")
    assert seen[-1]["headers"]["authorization"] == "Bearer sk-test"


def test_stubbed_chat_classify_entities_and_error(page: Any, static_url: str) -> None:
    seen: list[dict[str, Any]] = []
    stub_api(page, seen)
    page.goto(static_url)
    page.wait_for_selector("#model option[value=llm]", state="attached")

    run_task(page, "chat", "Say hello")
    assert page.inner_text("#output") == "Hello!"
    assert page.get_attribute("#output", "data-chunks") == "3"
    assert seen[-1]["body"]["stream"] is True
    assert seen[-1]["body"]["messages"] == [{"role": "user", "content": "Say hello"}]

    run_task(page, "classify", "great")
    rows = page.eval_on_selector_all(".prob", "rs => rs.map(r => r.innerText.replace(/\\s+/g, ' ').trim())")
    assert rows == ["negative 0.100", "neutral 0.200", "positive 0.700"]
    assert page.get_attribute(".prob.top .bar div", "style") == "width: 70%;"

    run_task(page, "entities", "🍎 " + APPLE)  # offsets count code points, as Python does
    marks = page.eval_on_selector_all("mark", "ms => ms.map(m => [m.firstChild.textContent, m.dataset.label])")
    assert marks == [["Apple", "ORG"], ["U.K.", "GPE"]]
    assert seen[-1]["body"] == {"model": "en-ner", "input": "🍎 " + APPLE}

    run_task(page, "embeddings", "hello")
    assert error_text(page) == "The model 'minilm' is resting."


# ----------------------------------------------------------------------------- the real service


def preview_app() -> Any:
    """A tiny Serve app that serves the playground page (same proxy, so same origin as the API)."""
    from ray import serve
    from starlette.responses import HTMLResponse

    @serve.deployment(name="playground-preview", ray_actor_options={"num_cpus": 0.01})
    class PlaygroundPreview:
        async def __call__(self, request: Any) -> HTMLResponse:
            from maas.endpoints.service.playground import playground_html

            return HTMLResponse(playground_html())

    return PlaygroundPreview.bind()


@pytest.fixture(scope="module")
def live_url(service: str) -> Iterator[str]:
    """The page as the service serves it at ``/`` (skips while that route is not there)."""
    if httpx.get(f"{service}/", timeout=30).status_code != 404:
        yield f"{service}/"
        return
    if os.environ.get("MAAS_PLAYGROUND_PREVIEW") != "1":
        pytest.skip("the ingress does not serve the playground at / yet")
    from ray import serve

    serve.run(preview_app(), name="playground-preview", route_prefix=PREVIEW_PREFIX)
    yield f"{service}{PREVIEW_PREFIX}"
    serve.delete("playground-preview")


def test_playground_against_the_service(page: Any, live_url: str) -> None:
    page.goto(live_url)
    assert page.title() == "maas playground"
    page.wait_for_selector(f"#model option[value='{GENERATOR}']", state="attached", timeout=60_000)

    run_task(page, "classify", "I love this phone, it is brilliant!", CLASSIFIER, timeout_ms=60_000)
    assert error_text(page) == ""
    probs = page.eval_on_selector_all(".prob .p", "ps => ps.map(p => Number(p.textContent))")
    labels = page.eval_on_selector_all(".prob .name", "ns => ns.map(n => n.textContent)")
    assert labels == ["negative", "neutral", "positive"]
    assert sum(probs) == pytest.approx(1.0, abs=0.01)

    run_task(page, "entities", APPLE, NER, timeout_ms=60_000)
    assert error_text(page) == ""
    marks = page.eval_on_selector_all("mark", "ms => ms.map(m => [m.firstChild.textContent, m.dataset.label])")
    assert marks == [["Apple", "ORG"], ["U.K.", "GPE"], ["$1 billion", "MONEY"]]
    assert page.inner_text("#status").startswith(f"3 entities · {NER}")

    page.select_option("#task", "completion")
    page.fill("#maxTokens", "100000")
    run_task(page, "completion", "The sky is", GENERATOR)
    assert "max_tokens must be at most" in error_text(page)  # the OpenAI error body's message

    page.fill("#maxTokens", "48")
    page.select_option("#task", "chat")
    page.evaluate(COUNT_UPDATES)
    run_task(page, "chat", "Say hello", GENERATOR, timeout_ms=240_000)
    assert error_text(page) == ""
    answer = page.inner_text("#output").strip()
    chunks = int(page.get_attribute("#output", "data-chunks") or 0)
    updates = page.evaluate("() => window.outputUpdates")
    assert answer, "no streamed text"
    assert chunks > 1 and updates > 1, f"{chunks} chunks, {updates} DOM updates"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
