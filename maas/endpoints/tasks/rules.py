"""The classic NLP tasks as pipelines composed over the ingress's own operations.

Each pipeline is a method of :class:`Pipelines`, which knows nothing of Serve or HTTP: it gets
the ingress's operations (chat, classify, entities, …) and what is served in a
:class:`PipelineBackend`, so the same code runs behind the HTTP routes, behind the handle
methods, and in tests with fake operations.

- ``summarize``: a prompt template over the generator's chat path, greedy by default.
- ``translate``: the translator deployment for the language pairs it serves, else the same
  prompt-template route over a generator; the response's ``engine`` says which.
- ``entities``: the NER deployment (the ingress's ``entities`` operation itself).
- ``analyze``: sentiment, topic, entities and a one-line summary of one text, in parallel.
- ``moderated_chat``: the user's last message is classified first; a negative one puts a
  de-escalation system prompt in front of the conversation; then the chat runs (whole or
  streamed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from maas.config import GeneratorModelConfig
from maas.endpoints.encoding.protocol import ClassifyRequest, ClassifyResponse
from maas.endpoints.tasks.protocol import (
    AnalyzeLatency,
    AnalyzeRequest,
    AnalyzeResponse,
    EntitiesRequest,
    EntitiesResponse,
    LabelPrediction,
    ModeratedChatChunk,
    ModeratedChatRequest,
    ModeratedChatResponse,
    Moderation,
    SummarizeRequest,
    SummarizeResponse,
    TextTaskFields,
    TranslateRequest,
    TranslateResponse,
)
from maas.engines.text_units import language_code, pair_key
from maas.engines.translation import Translation, unsupported_pair
from maas.protocol.base import UsageInfo, new_id, now
from maas.protocol.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError

T = TypeVar("T")
PipelineRequest = SummarizeRequest | TranslateRequest | EntitiesRequest | AnalyzeRequest | ModeratedChatRequest

SUMMARIZE_SYSTEM = "You are a careful editor. You write short, faithful summaries."
SUMMARIZE_USER = (
    "Summarize the following text in at most {max_words} words. Reply with the summary only.\n\n"
    "Text:\n{input}"
)
TRANSLATE_SYSTEM = "You are a professional translator. You translate faithfully and completely."
TRANSLATE_USER = (
    "Translate the following text from {source_language} to {target_language}. Reply with the "
    "translation only.\n\nText:\n{input}"
)


@dataclass(frozen=True)
class PipelineBackend:
    """What the pipelines use from the ingress: its operations and what it serves.

    ``open_chat_stream`` validates a chat request (model, context length, …) and only then
    returns the stream, so a bad streamed request fails before anything is sent.
    """

    chat: Callable[[ChatCompletionRequest], Awaitable[ChatCompletionResponse]]
    open_chat_stream: Callable[[ChatCompletionRequest], Awaitable[AsyncIterator[ChatCompletionChunk]]]
    classify: Callable[[ClassifyRequest], Awaitable[ClassifyResponse]]
    entities: Callable[[EntitiesRequest], Awaitable[EntitiesResponse]]
    generators: dict[str, GeneratorModelConfig]
    classifiers: frozenset[str]
    ner_models: tuple[str, ...]
    translate_text: Callable[[str, str, str], Awaitable[Translation]] | None = None
    """``(model, pair, text)`` → the translator deployment's translation."""
    translators: dict[str, list[str]] = field(default_factory=dict)
    """Translation model → its language pairs (``en-pt``)."""


class Pipelines:
    """The pipelines over one :class:`PipelineBackend`."""

    def __init__(self, backend: PipelineBackend) -> None:
        self.backend = backend

    # ------------------------------------------------------------------ summarize, translate

    async def summarize(self, request: SummarizeRequest) -> SummarizeResponse:
        """A summary in at most ``max_words`` words (a longer answer is cut at that word)."""
        prompt = SUMMARIZE_USER.format(max_words=request.max_words, input=request.input)
        chat = self._template_chat(request, SUMMARIZE_SYSTEM, prompt, 2 * request.max_words + 16)
        response = await self.backend.chat(chat)
        output = first_words(response.choices[0].message.content, request.max_words)
        return SummarizeResponse(model=response.model, output=output,
                                 finish_reason=response.choices[0].finish_reason, usage=response.usage)

    async def translate(self, request: TranslateRequest) -> TranslateResponse:
        """The text in ``target_language``: by a translation model if one serves the pair."""
        route = self.translation_route(request)
        if route is None:
            return await self.translate_with_generator(request)
        model, pair = route
        result = await self.backend.translate_text(model, pair, request.input)  # type: ignore[misc]
        return TranslateResponse(model=model, output=result.text, finish_reason="stop", engine="translator",
                                 pair=pair, usage=UsageInfo.of(result.input_tokens, result.output_tokens))

    def translation_route(self, request: TranslateRequest) -> tuple[str, str] | None:
        """``(translation model, pair)`` to use, or None for the generator route.

        A named translation model must serve the pair (else a 400 naming the pairs served); a
        named generator is used as asked; no model: the first translation model with the pair,
        else the first generator, else a 400.
        """
        pair = translation_pair(request)
        served = self.backend.translators
        if request.model in served:
            if pair not in served[request.model]:
                raise unsupported_pair(pair, {request.model: served[request.model]})
            return request.model, pair
        if request.model is not None:
            return None if request.model in self.backend.generators else self._unknown_model(request.model)
        for model, pairs in served.items():
            if pair in pairs:
                return model, pair
        if self.backend.generators:
            return None
        raise unsupported_pair(pair, served)

    def _unknown_model(self, model: str) -> None:
        raise not_found(model, "translation", [*self.backend.translators, *self.backend.generators], "model")

    async def translate_with_generator(self, request: TranslateRequest) -> TranslateResponse:
        """The prompt-template route: a generator asked to translate, greedy by default."""
        prompt = TRANSLATE_USER.format(source_language=request.source_language.strip(),
                                       target_language=request.target_language.strip(),
                                       input=request.input)
        chat = self._template_chat(request, TRANSLATE_SYSTEM, prompt, len(request.input) // 2 + 16)
        response = await self.backend.chat(chat)
        return TranslateResponse(model=response.model, output=response.choices[0].message.content.strip(),
                                 engine="generator",
                                 finish_reason=response.choices[0].finish_reason, usage=response.usage)

    # ------------------------------------------------------------------ analyze

    async def analyze(self, request: AnalyzeRequest) -> AnalyzeResponse:
        """Sentiment, topic, entities and a one-line summary, computed concurrently.

        Every part's model is checked before any part starts; a part whose default model is
        not served is null. ``latency_ms`` has each part's time and the total.
        """
        parts = self._analyze_parts(request)
        start = time.perf_counter()
        results = await gather_or_cancel([timed(part) for part in parts.values()])
        total = elapsed_ms(start)
        done = dict(zip(parts, results, strict=True))
        return analyze_response(done, total)

    def analyze_models(self, request: AnalyzeRequest) -> dict[str, str | None]:
        """Each part's model, defaults resolved and checked (None: the part is skipped)."""
        return {
            "sentiment": self._classifier_for(request, "sentiment_model", "sentiment"),
            "topic": self._classifier_for(request, "topic_model", "topic"),
            "entities": self._ner_for(request),
            "summary": self._generator_for(request),
        }

    def _analyze_parts(self, request: AnalyzeRequest) -> dict[str, Coroutine[Any, Any, Any]]:
        """The parts to run, by name; each model is resolved (and checked) here."""
        text = request.input
        models = self.analyze_models(request)
        parts: dict[str, Coroutine[Any, Any, Any]] = {}
        for name in ("sentiment", "topic"):
            if models[name] is not None:
                parts[name] = self.backend.classify(ClassifyRequest(model=models[name], input=text))
        if models["entities"] is not None:
            parts["entities"] = self.backend.entities(EntitiesRequest(model=models["entities"], input=text))
        if models["summary"] is not None:
            summary = SummarizeRequest(model=models["summary"], input=text,
                                       max_words=request.summary_max_words)
            parts["summary"] = self.summarize(summary)
        return parts

    def _classifier_for(self, request: AnalyzeRequest, field: str, default: str) -> str | None:
        served = default if default in self.backend.classifiers else None
        model = request.chosen(field, served)
        if model is not None:
            self.check_classifier(model, field)
        return model

    def _ner_for(self, request: AnalyzeRequest) -> str | None:
        model = request.chosen("ner_model", next(iter(self.backend.ner_models), None))
        if model is not None and model not in self.backend.ner_models:
            raise not_found(model, "named-entity recognition", self.backend.ner_models, "ner_model")
        return model

    def _generator_for(self, request: AnalyzeRequest) -> str | None:
        model = request.chosen("summary_model", next(iter(self.backend.generators), None))
        return None if model is None else self.generator(model, "summary_model")

    # ------------------------------------------------------------------ moderated chat

    async def moderated_chat(self, request: ModeratedChatRequest) -> ModeratedChatResponse:
        """The chat answer after moderation (``stream`` is ignored)."""
        chat, moderation = await self.moderate(request)
        response = await self.backend.chat(chat)
        return ModeratedChatResponse(**dict(response), moderation=moderation)

    async def open_moderated_chat_stream(
        self, request: ModeratedChatRequest
    ) -> tuple[Moderation, AsyncIterator[ChatCompletionChunk]]:
        """Moderate and validate now; the stream's first chunk then carries the moderation."""
        chat, moderation = await self.moderate(request)
        chunks = await self.backend.open_chat_stream(chat)
        return moderation, with_moderation_first(chunks, chat.model, moderation)

    async def moderate(self, request: ModeratedChatRequest) -> tuple[ChatCompletionRequest, Moderation]:
        """Classify the user's last message; the chat request to run and the route taken."""
        model = self.generator(request.model)
        self.check_classifier(request.moderation_model, "moderation_model")
        result = await self.backend.classify(
            ClassifyRequest(model=request.moderation_model, input=request.last_user_text())
        )
        data = result.data[0]
        if request.negative_label not in data.labels:
            raise InvalidRequestError(
                f"negative_label '{request.negative_label}' is not a label of '{result.model}' "
                f"({', '.join(data.labels)}).", "negative_label")
        negative = data.probs[data.labels.index(request.negative_label)]
        applied = negative > request.negative_threshold
        moderation = Moderation(model=result.model, label=data.label, negative_probability=negative,
                                negative_threshold=request.negative_threshold, system_prompt_applied=applied)
        chat = request.chat_request(model, request.deescalation_prompt if applied else None)
        return chat, moderation

    # ------------------------------------------------------------------ shared

    def models_of(self, request: PipelineRequest) -> list[str]:
        """The models a pipeline request will use, defaults resolved: what the API key must
        allow (:mod:`maas.edge.admission`). A model that is not served is a 404 here."""
        if isinstance(request, TranslateRequest):
            route = self.translation_route(request)
            return [route[0] if route else self.generator(request.model)]
        if isinstance(request, SummarizeRequest):
            return [self.generator(request.model)]
        if isinstance(request, EntitiesRequest):
            model = request.model or next(iter(self.backend.ner_models), None)
            return [model] if model else []
        if isinstance(request, AnalyzeRequest):
            return [model for model in self.analyze_models(request).values() if model is not None]
        self.check_classifier(request.moderation_model, "moderation_model")
        return [self.generator(request.model), request.moderation_model]

    def generator(self, model: str | None, param: str = "model") -> str:
        """``model`` if it is a served generator, the first generator if None; else a 404."""
        if model is None:
            model = next(iter(self.backend.generators), None)
        if model is None or model not in self.backend.generators:
            raise not_found(model or "(default)", "generation", self.backend.generators, param)
        return model

    def check_classifier(self, model: str, param: str) -> None:
        """A 404 naming ``param`` unless ``model`` (or ``name/vN``) is a served classifier."""
        if model.partition("/")[0] not in self.backend.classifiers:
            raise not_found(model, "classification", self.backend.classifiers, param)

    def _template_chat(self, request: TextTaskFields, system: str, prompt: str,
                       default_max_tokens: int) -> ChatCompletionRequest:
        """The chat request of a prompt template; ``max_tokens`` defaults to the task's size."""
        model = self.generator(request.model)
        limit = self.backend.generators[model].max_tokens_limit
        max_tokens = request.max_tokens or min(default_max_tokens, limit)
        return ChatCompletionRequest(
            model=model, max_tokens=max_tokens, temperature=request.temperature, seed=request.seed,
            messages=[ChatMessage(role="system", content=system), ChatMessage(role="user", content=prompt)],
        )


# ----------------------------------------------------------------------------- helpers


def translation_pair(request: TranslateRequest) -> str:
    """The request's pair in language codes (``en-pt``); an unknown name stays as written."""
    source, target = request.source_language.strip(), request.target_language.strip()
    source, target = language_code(source) or source, language_code(target) or target
    if source == target:
        raise InvalidRequestError("target_language must differ from source_language.", "target_language")
    return pair_key(source, target)


def not_found(model: str, capability: str, available: Iterable[str], param: str) -> ModelNotFoundError:
    """The 404 of a model that is not served, naming the request field that chose it."""
    error = ModelNotFoundError.for_model(model, capability, sorted(available))
    error.param = param
    return error


def first_words(text: str, max_words: int) -> str:
    """``text`` stripped, cut after ``max_words`` words (whitespace kept when it fits)."""
    words = text.split()
    return " ".join(words[:max_words]) if len(words) > max_words else text.strip()


def one_line(text: str) -> str:
    """``text`` on one line: every run of whitespace becomes one space."""
    return " ".join(text.split())


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` value)."""
    return round((time.perf_counter() - start) * 1000, 3)


async def timed(awaitable: Awaitable[T]) -> tuple[T, float]:
    """The result of ``awaitable`` and how long it took (ms)."""
    start = time.perf_counter()
    result = await awaitable
    return result, elapsed_ms(start)


async def gather_or_cancel(awaitables: list[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` that cancels the other awaitables (and their remote calls) on a failure."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def label_prediction(response: ClassifyResponse) -> LabelPrediction:
    """The classifier's answer for the one text of ``response``."""
    data = response.data[0]
    return LabelPrediction(label=data.label, probability=max(data.probs), labels=data.labels, probs=data.probs)


def analyze_response(done: dict[str, tuple[Any, float]], total_ms: float) -> AnalyzeResponse:
    """The response of the parts that ran (name → (result, ms)) and the total time."""
    fields: dict[str, Any] = {}
    models: dict[str, str] = {}
    usages: list[UsageInfo] = []
    for name, (result, _) in done.items():
        models[name] = result.model
        usages.append(result.usage)
        if name in ("sentiment", "topic"):
            fields[name] = label_prediction(result)
        elif name == "entities":
            fields[name] = result.data[0].entities
        else:
            fields[name] = one_line(result.output)
    latency = AnalyzeLatency(total=total_ms, **{name: ms for name, (_, ms) in done.items()})
    usage = UsageInfo.of(sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages))
    return AnalyzeResponse(models=models, latency_ms=latency, usage=usage, **fields)


async def with_moderation_first(
    chunks: AsyncIterator[ChatCompletionChunk], model: str, moderation: Moderation
) -> AsyncIterator[ChatCompletionChunk]:
    """A chat stream behind one first chunk (``choices: []``) carrying the moderation.

    Every chunk gets the id of that first one, so the stream stays one completion.
    """
    first = ModeratedChatChunk(id=new_id("chatcmpl"), created=now(), model=model, choices=[],
                               moderation=moderation)
    yield first
    try:
        async for chunk in chunks:
            chunk.id, chunk.created = first.id, first.created
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()  # a client that left: stop the generation too
