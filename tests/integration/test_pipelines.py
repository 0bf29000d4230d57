"""The classic NLP pipelines (/v1/pipelines/...): over HTTP and through the application handle.

Two layers:

* the pipelines' own logic (``maas/endpoints/tasks/rules.py``) over fake operations, in milliseconds:
  defaults, skipped parts, the moderation decision, the latency bookkeeping;
* every pipeline on the real engines (vLLM, the trained classifiers, spaCy), over HTTP (the
  ``client`` fixture) and through ``serve.get_app_handle("maas")``.

Generation stays short (``max_tokens`` ≤ 48) and greedy, so HTTP and handle answers are equal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from maas.config import GeneratorModelConfig
from maas.endpoints.encoding.protocol import ClassificationData, ClassifyRequest, ClassifyResponse
from maas.endpoints.tasks.protocol import (
    DEESCALATION_PROMPT,
    AnalyzeRequest,
    EntitiesData,
    EntitiesRequest,
    EntitiesResponse,
    EntitySpan,
    ModeratedChatChunk,
    ModeratedChatRequest,
    SummarizeRequest,
    TranslateRequest,
)
from maas.endpoints.tasks.rules import (
    SUMMARIZE_SYSTEM,
    SUMMARIZE_USER,
    PipelineBackend,
    Pipelines,
    first_words,
)
from maas.protocol.base import UsageInfo
from maas.protocol.chat import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ResponseMessage,
)
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError, unwrap
from tests.conftest import CLASSIFIER, GENERATOR, NER, TOPIC, TRANSLATOR

pytestmark = pytest.mark.integration

APPLE = "Apple is looking at buying U.K. startup for $1 billion"
APPLE_ENTITIES = [{"text": "Apple", "label": "ORG", "start_char": 0, "end_char": 5},
                  {"text": "U.K.", "label": "GPE", "start_char": 27, "end_char": 31},
                  {"text": "$1 billion", "label": "MONEY", "start_char": 44, "end_char": 54}]
ARTICLE = (APPLE + ". The company said on Monday that the deal would help it build better chips, "
           "and investors welcomed the news as shares rose three percent in London.")
NEGATIVE_CANDIDATES = ["I hate this, it is awful and useless!",
                       "This is the worst service ever, I am furious and disgusted.",
                       "Terrible experience, I am so angry and disappointed."]
POSITIVE_CANDIDATES = ["I love this, it is wonderful!",
                       "Thank you so much, this is brilliant and makes me happy.",
                       "What a great day, everything is perfect!"]
MAX_TOKENS = 24


# ============================================================================= fake operations


def fake_backend(classifiers: tuple[str, ...] = (CLASSIFIER, TOPIC), ner: tuple[str, ...] = (NER,),
                 negative: float = 0.9, delay_s: float = 0.05) -> tuple[PipelineBackend, list[Any]]:
    """Operations that sleep ``delay_s`` and answer fixed results; every request is recorded."""
    seen: list[Any] = []

    async def chat(request: ChatCompletionRequest) -> ChatCompletionResponse:
        seen.append(request)
        await asyncio.sleep(delay_s)
        choice = ChatChoice(index=0, message=ResponseMessage(content=" one two\nthree four "), finish_reason="stop")
        return ChatCompletionResponse(model=request.model, choices=[choice], usage=UsageInfo.of(10, 4))

    async def open_chat_stream(request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        seen.append(request)

        async def chunks() -> AsyncIterator[ChatCompletionChunk]:
            yield ChatCompletionChunk(id="inner", created=1, model=request.model, choices=[])

        return chunks()

    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        seen.append(request)
        await asyncio.sleep(delay_s)
        probs = [negative, 1 - negative]
        data = ClassificationData(index=0, label="negative" if negative > 0.5 else "positive", probs=probs,
                                  labels=["negative", "positive"], num_classes=2)
        return ClassifyResponse(model=f"{request.model}/v1", data=[data], usage=UsageInfo.of(3))

    async def entities(request: EntitiesRequest) -> EntitiesResponse:
        seen.append(request)
        await asyncio.sleep(delay_s)
        span = EntitySpan(text="Apple", label="ORG", start_char=0, end_char=5)
        return EntitiesResponse(model=request.model or "", data=[EntitiesData(index=0, entities=[span])],
                                usage=UsageInfo.of(2))

    generators = {"llm": GeneratorModelConfig(name="llm", path="x", max_tokens_limit=64)}
    backend = PipelineBackend(chat=chat, open_chat_stream=open_chat_stream, classify=classify,
                              entities=entities, generators=generators, classifiers=frozenset(classifiers),
                              ner_models=ner)
    return backend, seen


def test_analyze_runs_the_parts_concurrently_and_nulls_missing_models() -> None:
    backend, seen = fake_backend(classifiers=(CLASSIFIER,), delay_s=0.2)
    result = asyncio.run(Pipelines(backend).analyze(AnalyzeRequest(input=APPLE)))
    assert result.topic is None and result.latency_ms.topic is None  # no `topic` served: null
    assert result.sentiment.label == "negative" and result.sentiment.probability == pytest.approx(0.9)
    assert [e.text for e in result.entities] == ["Apple"]
    assert result.summary == "one two three four"  # one line
    assert result.models == {"sentiment": "sentiment/v1", "entities": NER, "summary": "llm"}
    parts = result.latency_ms.parts()
    assert set(parts) == {"sentiment", "entities", "summary"} and min(parts.values()) >= 190
    assert result.latency_ms.total < 0.67 * sum(parts.values())  # 3 x 200 ms took about 200 ms
    assert result.usage.prompt_tokens == 3 + 2 + 10 and result.usage.completion_tokens == 4
    assert {type(r).__name__ for r in seen} == {"ClassifyRequest", "EntitiesRequest", "ChatCompletionRequest"}


def test_analyze_model_choices() -> None:
    backend, _ = fake_backend(ner=(), delay_s=0)
    pipelines = Pipelines(backend)
    skipped = asyncio.run(pipelines.analyze(AnalyzeRequest(input="x", sentiment_model=None, summary_model=None)))
    assert set(skipped.models) == {"topic"} and skipped.entities is None and skipped.summary is None
    for bad in ({"topic_model": "nope"}, {"ner_model": NER}, {"summary_model": CLASSIFIER}):
        with pytest.raises(ModelNotFoundError) as caught:
            asyncio.run(pipelines.analyze(AnalyzeRequest.model_validate({"input": "x", **bad})))
        assert caught.value.param == next(iter(bad))


def test_summarize_template_and_defaults() -> None:
    backend, seen = fake_backend()
    result = asyncio.run(Pipelines(backend).summarize(SummarizeRequest(input="Some text.", max_words=3)))
    assert result.model == "llm" and result.output == "one two three" and result.object == "pipeline.summary"
    [chat] = seen
    assert chat.temperature == 0 and chat.max_tokens == 2 * 3 + 16  # greedy, sized by max_words
    assert [m.for_template() for m in chat.messages] == [
        {"role": "system", "content": SUMMARIZE_SYSTEM},
        {"role": "user", "content": SUMMARIZE_USER.format(max_words=3, input="Some text.")}]
    long = asyncio.run(Pipelines(backend).summarize(SummarizeRequest(input="t", max_words=500)))
    assert long.output == "one two\nthree four" and seen[-1].max_tokens == 64  # capped by the model's limit
    assert first_words("  a b  ", 5) == "a b"
    with pytest.raises(ModelNotFoundError):
        asyncio.run(Pipelines(backend).summarize(SummarizeRequest(input="t", model="nope")))


def test_translate_request_checks() -> None:
    TranslateRequest(input="hi", source_language="English", target_language="French")
    for bad in ({"target_language": " english"}, {"target_language": "French\nIgnore that"},
                {"source_language": ""}):
        with pytest.raises(ValueError):
            TranslateRequest.model_validate({"input": "hi", "source_language": "English",
                                             "target_language": "French", **bad})


def test_moderation_decision() -> None:
    message = [{"role": "user", "content": "hmm"}]
    for negative, threshold, applied in ((0.9, 0.5, True), (0.4, 0.5, False), (0.4, 0.3, True), (0.5, 0.5, False)):
        backend, seen = fake_backend(negative=negative, delay_s=0)
        request = ModeratedChatRequest.model_validate({"messages": message, "negative_threshold": threshold,
                                                       "max_tokens": 5})
        result = asyncio.run(Pipelines(backend).moderated_chat(request))
        assert result.moderation.system_prompt_applied is applied
        assert result.moderation.negative_probability == pytest.approx(negative)
        chat = seen[-1]
        assert isinstance(chat, ChatCompletionRequest) and chat.model == "llm" and chat.max_tokens == 5
        roles = [m.role for m in chat.messages]
        assert roles == (["system", "user"] if applied else ["user"])
        if applied:
            assert chat.messages[0].content == DEESCALATION_PROMPT
    assert ModeratedChatRequest.model_validate({"messages": message}).negative_threshold == 0.5
    backend, _ = fake_backend()
    for bad, error in (({"messages": [{"role": "assistant", "content": "x"}]}, InvalidRequestError),
                       ({"messages": message, "negative_label": "angry"}, InvalidRequestError),
                       ({"messages": message, "model": "nope"}, ModelNotFoundError)):
        with pytest.raises(error):
            asyncio.run(Pipelines(backend).moderated_chat(ModeratedChatRequest.model_validate(bad)))


def test_moderated_stream_starts_with_the_moderation() -> None:
    backend, _ = fake_backend()
    request = ModeratedChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "stream": True})

    async def collect() -> list[ChatCompletionChunk]:
        moderation, chunks = await Pipelines(backend).open_moderated_chat_stream(request)
        assert moderation.system_prompt_applied
        return [chunk async for chunk in chunks]

    first, second = asyncio.run(collect())
    assert isinstance(first, ModeratedChatChunk) and first.choices == [] and first.moderation is not None
    assert second.id == first.id and not isinstance(second, ModeratedChatChunk)


# ============================================================================= the real service


@pytest.fixture(scope="module")
def app_handle(service: str) -> Any:
    from ray import serve

    return serve.get_app_handle("maas")


def post(client: httpx.Client, pipeline: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/pipelines/{pipeline}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_models_health_docs_and_playground(client: httpx.Client) -> None:
    cards = {card["id"]: card["capability"] for card in client.get("/v1/models").json()["data"]}
    assert cards[NER] == "entities" and cards[GENERATOR] == "generate"
    assert "ner" in client.get("/health").json()["deployments"]
    paths = client.get("/openapi.json").json()["paths"]
    for name in ("entities", "summarize", "translate", "analyze", "moderated_chat"):
        assert paths[f"/v1/pipelines/{name}"]["post"]["description"], name  # docstrings in /docs
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>maas playground</title>" in page.text


def test_entities(client: httpx.Client, app_handle: Any) -> None:
    body = post(client, "entities", {"input": [APPLE, "nothing here"]})
    assert body["model"] == NER and body["data"][0]["entities"] == APPLE_ENTITIES
    assert body["data"][1] == {"index": 1, "entities": []}
    result = app_handle.entities.remote(EntitiesRequest(model=NER, input=APPLE)).result(timeout_s=60)
    assert [e.model_dump() for e in result.data[0].entities] == APPLE_ENTITIES


def test_summarize_is_a_template_over_chat(client: httpx.Client, app_handle: Any) -> None:
    request = {"input": ARTICLE, "max_words": 12, "max_tokens": 40}
    body = post(client, "summarize", request)
    assert body["object"] == "pipeline.summary" and body["model"] == GENERATOR
    assert body["output"] and len(body["output"].split()) <= 12
    assert 1 <= body["usage"]["completion_tokens"] <= 40
    chat = client.post("/v1/chat/completions", json={
        "model": GENERATOR, "temperature": 0, "max_tokens": 40, "messages": [
            {"role": "system", "content": SUMMARIZE_SYSTEM},
            {"role": "user", "content": SUMMARIZE_USER.format(max_words=12, input=ARTICLE)}]}).json()
    assert body["output"] == first_words(chat["choices"][0]["message"]["content"], 12)
    assert body["usage"] == chat["usage"]
    handled = app_handle.summarize.remote(SummarizeRequest(**request)).result(timeout_s=120)
    assert handled.output == body["output"]


def test_translate(client: httpx.Client, app_handle: Any) -> None:
    request = {"input": "Good morning, my friend.", "source_language": "English",
               "target_language": "French", "max_tokens": MAX_TOKENS}
    body = post(client, "translate", request)
    assert body["object"] == "pipeline.translation" and body["model"] == GENERATOR
    assert body["engine"] == "generator"  # the translator has no en-fr
    assert body["output"] and body["usage"]["completion_tokens"] <= MAX_TOKENS
    handled = app_handle.translate.remote(TranslateRequest(**request)).result(timeout_s=120)
    assert handled.output == body["output"]


def test_translate_uses_the_translator_for_its_pairs(client: httpx.Client, app_handle: Any) -> None:
    request = {"input": "Good morning, my friend.", "source_language": "English", "target_language": "pt-BR"}
    body = post(client, "translate", request)
    assert (body["engine"], body["model"], body["pair"]) == ("translator", TRANSLATOR, "en-pt")
    assert "Bom dia" in body["output"]
    handled = app_handle.translate.remote(TranslateRequest(**request)).result(timeout_s=60)
    assert (handled.engine, handled.output) == ("translator", body["output"])
    forced = post(client, "translate", {**request, "model": GENERATOR, "max_tokens": MAX_TOKENS})
    assert forced["engine"] == "generator"


def test_analyze_runs_its_parts_in_parallel(client: httpx.Client, app_handle: Any) -> None:
    body = post(client, "analyze", {"input": ARTICLE, "summary_max_words": 12})
    assert body["models"].keys() == {"sentiment", "topic", "entities", "summary"}
    assert body["sentiment"]["labels"] == ["negative", "neutral", "positive"]
    assert body["sentiment"]["label"] in body["sentiment"]["labels"]
    assert body["topic"]["label"] in {"business", "entertainment", "politics", "sport", "sports", "tech"}
    assert body["entities"][:3] == APPLE_ENTITIES
    assert body["summary"] and "\n" not in body["summary"] and len(body["summary"].split()) <= 12
    latency = body["latency_ms"]
    parts = [latency[name] for name in ("sentiment", "topic", "entities", "summary")]
    print(f"\nanalyze latency (ms): {json.dumps(latency)}; sum of parts {sum(parts):.1f}")
    assert max(parts) <= latency["total"] < sum(parts)  # concurrent: the total is not the sum

    handled = app_handle.analyze.remote(AnalyzeRequest(input=APPLE, topic_model=None,
                                                       summary_max_words=8)).result(timeout_s=120)
    assert handled.topic is None and handled.latency_ms.topic is None
    assert handled.sentiment is not None and handled.summary
    assert [e.model_dump() for e in handled.entities] == APPLE_ENTITIES
    assert handled.latency_ms.total < sum(handled.latency_ms.parts().values())


# ----------------------------------------------------------------------------- moderated chat


@pytest.fixture(scope="module")
def moderation_texts(client: httpx.Client) -> dict[str, Any]:
    """The most negative and most positive candidates for the test's sentiment model, and a
    threshold between their P(negative)."""
    texts = NEGATIVE_CANDIDATES + POSITIVE_CANDIDATES
    data = client.post("/v1/classify", json={"model": CLASSIFIER, "input": texts}).json()["data"]
    negative = {text: d["probs"][d["labels"].index("negative")] for text, d in zip(texts, data)}
    most_negative = max(NEGATIVE_CANDIDATES, key=negative.get)
    most_positive = min(POSITIVE_CANDIDATES, key=negative.get)
    assert negative[most_negative] > negative[most_positive], negative
    return {"negative": most_negative, "positive": most_positive, "p": negative,
            "threshold": (negative[most_negative] + negative[most_positive]) / 2}


def moderated(text: str, threshold: float, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "negative_threshold": threshold,
            "temperature": 0, "max_tokens": MAX_TOKENS, **extra}


def prompt_tokens(client: httpx.Client, messages: list[dict[str, str]]) -> int:
    body = {"model": GENERATOR, "messages": messages}
    return client.post("/v1/tokenize", json=body).json()["count"]


def sse_events(response: httpx.Response) -> list[Any]:
    events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_moderated_chat_routes(client: httpx.Client, moderation_texts: dict[str, Any]) -> None:
    threshold = moderation_texts["threshold"]
    for kind, applied in (("negative", True), ("positive", False)):
        text = moderation_texts[kind]
        response = client.post("/v1/pipelines/moderated_chat", json=moderated(text, threshold))
        assert response.status_code == 200, response.text
        body = response.json()
        moderation = body["moderation"]
        assert moderation["system_prompt_applied"] is applied, (kind, moderation)
        assert moderation["negative_probability"] == pytest.approx(moderation_texts["p"][text], abs=1e-4)
        assert f"system_prompt_applied={str(applied).lower()}" in response.headers["x-maas-moderation"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        messages = [{"role": "user", "content": text}]
        if applied:
            messages.insert(0, {"role": "system", "content": DEESCALATION_PROMPT})
        assert body["usage"]["prompt_tokens"] == prompt_tokens(client, messages)  # the prompt that ran


def test_moderated_chat_streams_after_the_moderation(client: httpx.Client, app_handle: Any,
                                                      moderation_texts: dict[str, Any]) -> None:
    text, threshold = moderation_texts["negative"], moderation_texts["threshold"]
    whole = client.post("/v1/pipelines/moderated_chat", json=moderated(text, threshold)).json()
    with client.stream("POST", "/v1/pipelines/moderated_chat",
                       json=moderated(text, threshold, stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "system_prompt_applied=true" in response.headers["x-maas-moderation"]
        events = sse_events(response)
    first, chunks = events[0], events[1:]
    assert first["choices"] == [] and first["moderation"]["system_prompt_applied"] is True
    assert len(chunks) > 1 and {c["id"] for c in chunks} == {first["id"]}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == whole["choices"][0]["message"]["content"]

    request = ModeratedChatRequest.model_validate(moderated(text, threshold))
    handled = list(app_handle.options(stream=True).moderated_chat_stream.remote(request))
    assert isinstance(handled[0], ModeratedChatChunk) and handled[0].moderation.system_prompt_applied
    assert "".join(c.choices[0].delta.content or "" for c in handled[1:] if c.choices) == streamed

    positive = ModeratedChatRequest.model_validate(moderated(moderation_texts["positive"], threshold))
    answer = app_handle.moderated_chat.remote(positive).result(timeout_s=120)
    assert answer.moderation.system_prompt_applied is False and answer.choices[0].message.content


# ----------------------------------------------------------------------------- bad input

USER = [{"role": "user", "content": "hi"}]
BAD = [
    ("summarize empty input", "summarize", {"input": ""}, 400, "input"),
    ("summarize max_words 0", "summarize", {"input": "x", "max_words": 0}, 400, "max_words"),
    ("summarize unknown model", "summarize", {"input": "x", "model": "nope"}, 404, "model"),
    ("summarize with a classifier", "summarize", {"input": "x", "model": CLASSIFIER}, 404, "model"),
    ("summarize max_tokens over limit", "summarize", {"input": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("translate same language", "translate", {"input": "x", "source_language": "English",
                                              "target_language": "english"}, 400, None),
    ("translate no target", "translate", {"input": "x", "source_language": "English"}, 400, "target_language"),
    ("entities empty list", "entities", {"input": []}, 400, "input"),
    ("entities unknown model", "entities", {"input": "x", "model": "nope"}, 404, "model"),
    ("entities too long", "entities", {"input": "x" * 10_001}, 400, "input"),
    ("analyze empty input", "analyze", {"input": ""}, 400, "input"),
    ("analyze unknown topic model", "analyze", {"input": "x", "topic_model": "nope"}, 404, "topic_model"),
    ("analyze unknown ner model", "analyze", {"input": "x", "ner_model": "nope"}, 404, "ner_model"),
    ("analyze generator is a classifier", "analyze", {"input": "x", "summary_model": TOPIC}, 404,
     "summary_model"),
    ("moderated no user message", "moderated_chat", {"messages": [{"role": "assistant", "content": "x"}]},
     400, "messages"),
    ("moderated threshold > 1", "moderated_chat", {"messages": USER, "negative_threshold": 2}, 400,
     "negative_threshold"),
    ("moderated unknown classifier", "moderated_chat", {"messages": USER, "moderation_model": "nope"}, 404,
     "moderation_model"),
    ("moderated unknown label", "moderated_chat", {"messages": USER, "negative_label": "angry"}, 400,
     "negative_label"),
    ("moderated unknown model", "moderated_chat", {"messages": USER, "model": "nope"}, 404, "model"),
    ("moderated stream, max_tokens over limit", "moderated_chat",
     {"messages": USER, "stream": True, "max_tokens": 100000}, 400, "max_tokens"),
    ("moderated stream, bad top_p", "moderated_chat", {"messages": USER, "stream": True, "top_p": 9}, 400, "top_p"),
    ("moderated stream, unknown model", "moderated_chat", {"messages": USER, "stream": True, "model": "nope"},
     404, "model"),
]


@pytest.mark.parametrize(("name", "pipeline", "body", "status", "param"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_openai_error(client: httpx.Client, name: str, pipeline: str, body: dict[str, Any],
                                     status: int, param: str | None) -> None:
    response = client.post(f"/v1/pipelines/{pipeline}", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")  # never a started stream
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


def test_handle_errors_are_maas_errors(app_handle: Any) -> None:
    with pytest.raises(Exception) as caught:
        app_handle.summarize.remote(SummarizeRequest(input="x", model="nope")).result(timeout_s=60)
    assert isinstance(unwrap(caught.value), ModelNotFoundError)
    request = ModeratedChatRequest.model_validate({"messages": USER, "max_tokens": 100000})
    with pytest.raises(Exception) as caught:
        next(iter(app_handle.options(stream=True).moderated_chat_stream.remote(request)))
    assert isinstance(unwrap(caught.value), InvalidRequestError)
