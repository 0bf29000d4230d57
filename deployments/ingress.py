"""HTTP ingress: the OpenAI-compatible API over the tokenizer, generator, classifier, encoder.

It also serves NER, the classic NLP pipelines (``/v1/pipelines/...``, composed in
``pipelines/tasks.py`` over the methods below) and the playground page at ``/``.

Each operation is a method of :class:`MaasIngress` taking and returning the wire schemas, so
a Ray job calls it through the application's handle exactly as HTTP clients do; the FastAPI
routes are a few lines each over those methods.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from maas.admission import Answer, admitted
from maas.assemble import chat_chunks, chat_response, completion_chunks, completion_response
from maas.auth import (
    KeyAuth,
    KeyStore,
    SharedRateLimiter,
    allowed_models,
    install_auth_middleware,
)
from maas.calls import open_stream, open_streams, result_of, results_of
from maas.config import AppConfig, GeneratorModelConfig
from maas.endpoints.completions_echo import check_echo, with_echo, with_prompt_logprobs
from maas.endpoints.models import model_card
from maas.endpoints.structured import json_schema_error
from maas.endpoints.tools import check_chat_request, template_tools, with_tools
from maas.engines.translation import Translation
from maas.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    MaasError,
    ModelNotFoundError,
    ServiceUnavailableError,
    log_client_errors_as_one_line,
)
from maas.guard import RequestLimits, install_request_guard
from maas.http import install_error_handlers, install_metrics_middleware, sse_events, truthful_openapi
from maas.metrics import MetricsRecorder
from maas.pipeline_schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    EntitiesRequest,
    EntitiesResponse,
    ModeratedChatRequest,
    ModeratedChatResponse,
    SummarizeRequest,
    SummarizeResponse,
    TranslateRequest,
    TranslateResponse,
    entities_response,
)
from maas.playground import playground_html
from maas.registry import ModelRegistry
from maas.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ClassificationData,
    ClassifyRequest,
    ClassifyResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    GenerationParams,
    GenerationResult,
    ModelCard,
    ModelList,
    ModelTraining,
    ResponseFormat,
    SamplingFields,
    TokenizeRequest,
    TokenizeResponse,
    UsageInfo,
    new_id,
    now,
)
from maas.served_classifiers import ServedClassifiers
from pipelines.tasks import PipelineBackend, PipelineRequest, Pipelines

HEALTH_TIMEOUT_S = 10.0

app = FastAPI(
    title="maas",
    description="NLP models as a service: generation, classification, embeddings, tokenization.",
    version="0.1.0",
)
recorder = MetricsRecorder()
key_auth = KeyAuth()  # its key store is set by the replica when the config names a key file
limits = RequestLimits()  # set by the replica from its config
install_error_handlers(app)
truthful_openapi(app)  # the errors each route answers, in the OpenAPI schema
install_auth_middleware(app, key_auth)
install_request_guard(app, limits)  # size, content type and deadline, before any work
install_metrics_middleware(app, recorder)  # outermost: counts 401s, 413s and 429s too


def resolve_max_tokens(
    requested: int | None, prompt_tokens: int, config: GeneratorModelConfig, param: str
) -> int:
    """The ``max_tokens`` to generate: bounded by the config and by the context left."""
    room = config.max_model_len - prompt_tokens
    if requested is None:
        return max(1, min(config.max_tokens_limit, room))
    if requested > config.max_tokens_limit:
        raise InvalidRequestError(
            f"{param} must be at most {config.max_tokens_limit} for this model.", param
        )
    if requested > room:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {config.max_model_len} tokens; the prompt "
            f"has {prompt_tokens} tokens and {param} asks for {requested}.",
            param,
        )
    return requested


def completion_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """The prompts of a completions request: one text, texts, token ids or lists of ids."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """An embedding as floats or as base64 of little-endian float32 (the openai client's default)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def with_response_format(params: GenerationParams, response_format: ResponseFormat | None) -> GenerationParams:
    """Structured output: JSON of a schema (compiled here, so a bad schema is a 400) or any object."""
    if response_format is None or response_format.type == "text":
        return params
    if response_format.type == "json_object":
        return params.model_copy(update={"json_object": True})
    schema = json.dumps(response_format.json_schema.json_schema)  # type: ignore[union-attr]
    check_json_schema(schema)
    return params.model_copy(update={"json_schema": schema})


def check_json_schema(schema: str) -> None:
    """Refuse a JSON schema that is invalid or that structured decoding cannot compile."""
    message = json_schema_error(schema)
    if message is not None:
        raise InvalidRequestError(f"response_format.json_schema.schema cannot be used: {message}",
                                  "response_format", code="invalid_json_schema")


def reject_unsupported(request: SamplingFields) -> None:
    """Clear 400s for OpenAI features this service does not offer."""
    if isinstance(request, CompletionRequest):
        check_echo(request)
    if isinstance(request, ChatCompletionRequest):
        check_chat_request(request)
        if request.response_format and request.response_format.type != "text" and request.n > 1:
            raise InvalidRequestError("response_format with n > 1 is not supported.", "n")


def event_stream(items: AsyncIterator[Any]) -> StreamingResponse:
    """A server-sent-events response of a stream of wire models."""
    return StreamingResponse(sse_events(items), media_type="text/event-stream")


def streamed(model: type) -> dict[int | str, dict[str, Any]]:
    """OpenAPI of a route answering ``model`` as JSON, or with ``stream: true`` server-sent events."""
    return {200: {"model": model, "description": "The answer; with `stream: true`, server-sent events "
                  "(`data: {chunk}` lines, then `data: [DONE]`).",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


model_route = admitted(lambda: key_auth, event_stream)
"""Every route that uses a model: its models admitted against the key, its usage charged."""


@serve.deployment(name="ingress")
@serve.ingress(app)
class MaasIngress:
    """The ``maas`` application's entry point: HTTP routes and handle methods."""

    def __init__(
        self,
        config: AppConfig,
        tokenizer: DeploymentHandle,
        generators: dict[str, DeploymentHandle],
        classifier: DeploymentHandle | None,
        encoder: DeploymentHandle | None,
        ner: DeploymentHandle | None = None,
        translator: DeploymentHandle | None = None,
    ) -> None:
        self.config = config
        log_client_errors_as_one_line()
        key_auth.store = KeyStore(config.ingress.api_keys_file) if config.ingress.api_keys_file else None
        if key_auth.store is not None and config.ingress.deployment.can_run_several():
            key_auth.shared = SharedRateLimiter(serve.get_replica_context().app_name)
        if config.generators:  # imports the schema checker now, not on a client's first schema
            check_json_schema('{"type": "object"}')
        limits.max_body_bytes = config.ingress.max_body_bytes
        limits.request_timeout_s = config.ingress.request_timeout_s
        self.tokenizer = tokenizer
        self.generators = generators
        self.classifier = classifier
        self.encoder = encoder
        self.generator_configs = {g.name: g for g in config.generators}
        self.classifiers = ServedClassifiers(config.classifier.models, ModelRegistry(config.registry_dir))
        self._classifier_handles: dict[str, DeploymentHandle] = {}
        self.encoder_models = {m.name for m in config.encoder.models}
        # --- NER and the pipelines (pipelines/tasks.py) ---
        self.ner = ner
        self.ner_models = tuple(m.name for m in config.ner.models)
        self.translator = translator
        self.pipelines = Pipelines(PipelineBackend(
            chat=self.chat, open_chat_stream=self._open_chat_stream, classify=self.classify,
            entities=self.entities, generators=self.generator_configs,
            classifiers=frozenset(m.name for m in config.classifier.models), ner_models=self.ner_models,
            translate_text=self._translate_text, translators=config.translator.pairs() if translator else {},
        ))

    # ------------------------------------------------------------------ handle methods

    def models(self) -> ModelList:
        """Every served model with its capability."""
        cards = [ModelCard(id=g.name, capability="generate", max_model_len=g.max_model_len)
                 for g in self.config.generators]
        cards += [self._classifier_card(m.name, m.max_seq_len) for m in self.config.classifier.models]
        cards += [ModelCard(id=m.name, capability="embed", max_model_len=m.max_seq_len)
                  for m in self.config.encoder.models]
        cards += [ModelCard(id=name, capability="entities") for name in self.ner_models]  # NER
        cards += [ModelCard(id=name, capability="translate", pairs=pairs)
                  for name, pairs in self.pipelines.backend.translators.items()]
        return ModelList(data=cards)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """A whole chat completion (``stream`` is ignored; see :meth:`chat_stream`)."""
        ids, params = await self._prepare_chat(request)
        result: GenerationResult = await result_of(self.generators[request.model].generate.remote(ids, params))
        return chat_response(request.model, result)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """A chat completion as chunks; call through ``handle.options(stream=True)``."""
        ids, params = await self._prepare_chat(request)
        async for chunk in await self._chat_chunks(request, ids, params):
            yield chunk

    async def completions(self, request: CompletionRequest) -> CompletionResponse:
        """A whole text completion for one or more prompts."""
        prompts, params = await self._prepare_completion(request)
        handle = self.generators[request.model]
        results = await results_of([handle.generate.remote(ids, params) for ids in prompts])
        response = completion_response(request.model, results, params.n)
        return with_echo(response, results, request, completion_prompts(request.prompt))

    async def completions_stream(self, request: CompletionRequest) -> AsyncIterator[CompletionResponse]:
        """A text completion as chunks; call through ``handle.options(stream=True)``."""
        prompts, params = await self._prepare_completion(request)
        async for chunk in await self._completion_chunks(request, prompts, params):
            yield chunk

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Unit-length sentence embeddings of one or more texts."""
        texts = self._embedding_texts(request)
        vectors = await self._encoder_handle(request.model).embed.remote(request.model, texts)
        if request.dimensions is not None and vectors and request.dimensions != len(vectors[0].vector):
            raise InvalidRequestError("dimensions cannot be changed for this model.", "dimensions")
        data = [EmbeddingData(index=i, embedding=encode_embedding(v.vector, request.encoding_format))
                for i, v in enumerate(vectors)]
        usage = UsageInfo.of(sum(v.num_tokens for v in vectors))
        return EmbeddingResponse(data=data, model=request.model, usage=usage)

    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        """Every label's probability for one or more texts."""
        model_id = self._classifier_model_id(request.model)
        results = await self._classifier_handle(model_id).classify.remote(model_id, request.texts())
        data = [ClassificationData(index=i, label=r.label, probs=r.probs, labels=r.labels,
                                   num_classes=len(r.probs)) for i, r in enumerate(results)]
        return ClassifyResponse(model=model_id, data=data,
                                usage=UsageInfo.of(sum(r.num_tokens for r in results)))

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """Token ids of a prompt or of chat messages (vLLM's ``/tokenize``)."""
        return await self.tokenizer.tokenize.remote(request)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        """Text of token ids (vLLM's ``/detokenize``)."""
        return await self.tokenizer.detokenize.remote(request)

    async def health(self) -> dict[str, Any]:
        """A real call into every deployment; raises 503 if any fails or hangs."""
        checks = {"tokenizer": self.tokenizer}
        checks.update({f"generator:{name}": h for name, h in self.generators.items()})
        checks.update({n: h for n, h in (("classifier", self.classifier), ("encoder", self.encoder),
                                         ("ner", self.ner), ("translator", self.translator)) if h is not None})
        try:
            await asyncio.wait_for(
                asyncio.gather(*(h.ping.remote() for h in checks.values())), HEALTH_TIMEOUT_S
            )
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            raise ServiceUnavailableError(f"Unhealthy: {type(exc).__name__}.") from None
        return {"status": "ok", "deployments": sorted(checks)}

    # ------------------------------------------------------------------ pipeline handle methods
    # NER and the classic NLP pipelines; the pipelines themselves are in pipelines/tasks.py.

    async def entities(self, request: EntitiesRequest) -> EntitiesResponse:
        """Named entities (with character offsets) of one or more texts, from the NER deployment."""
        model = request.model or next(iter(self.ner_models), None)
        if self.ner is None or model not in self.ner_models:
            raise ModelNotFoundError.for_model(model or "(default)", "named-entity recognition",
                                               list(self.ner_models))
        results = await self.ner.entities.remote(model, request.texts())
        return entities_response(model, results)

    async def summarize(self, request: SummarizeRequest) -> SummarizeResponse:
        """A summary of a text in at most ``max_words`` words, by a generator (greedy by default)."""
        return await self.pipelines.summarize(request)

    async def translate(self, request: TranslateRequest) -> TranslateResponse:
        """A translation: by a translation model for the pairs it serves, else by a generator."""
        return await self.pipelines.translate(request)

    async def analyze(self, request: AnalyzeRequest) -> AnalyzeResponse:
        """Sentiment, topic, entities and a one-line summary of a text, computed in parallel."""
        return await self.pipelines.analyze(request)

    async def moderated_chat(self, request: ModeratedChatRequest) -> ModeratedChatResponse:
        """A chat completion after moderation of the user's last message (``stream`` is ignored)."""
        return await self.pipelines.moderated_chat(request)

    async def moderated_chat_stream(self, request: ModeratedChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        """A moderated chat as chunks, the first one with ``moderation``; call with ``stream=True``."""
        _, chunks = await self.pipelines.open_moderated_chat_stream(request)
        async for chunk in chunks:
            yield chunk

    async def _translate_text(self, model: str, pair: str, text: str) -> Translation:
        """One text translated by the translator deployment (batched there with other requests)."""
        return (await self.translator.translate.remote(model, pair, [text]))[0]  # type: ignore[union-attr]

    async def _open_chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Validate a chat request now (errors before any byte is sent), then its chunk stream."""
        ids, params = await self._prepare_chat(request)
        return await self._chat_chunks(request, ids, params)

    # ------------------------------------------------------------------ internals

    def _generator_config(self, model: str) -> GeneratorModelConfig:
        if model not in self.generator_configs:
            raise ModelNotFoundError.for_model(model, "generation", list(self.generator_configs))
        return self.generator_configs[model]

    def _classifier_model_id(self, model: str) -> str:
        """The model id serving ``model`` now: its live registry version, or a pinned ``name/vN``."""
        if self.classifier is None:
            raise ModelNotFoundError.for_model(model, "classification", [])
        return self.classifiers.resolve(model)

    def _classifier_handle(self, model_id: str) -> DeploymentHandle:
        """The classifier handle routing to replicas that have ``model_id`` loaded."""
        handle = self._classifier_handles.get(model_id)
        if handle is None:
            handle = self.classifier.options(multiplexed_model_id=model_id)  # type: ignore[union-attr]
            self._classifier_handles[model_id] = handle
        return handle

    def _classifier_card(self, name: str, max_seq_len: int) -> ModelCard:
        """A classifier's card; a registry one says whether it is live and how its training stands."""
        version = self._live_version(name)
        registry_name = self.classifiers.registry_name(name)
        run = self.classifiers.registry.training_status(registry_name) if registry_name else None
        training = ModelTraining.model_validate(run.model_dump()) if run else None
        status = "ready"
        if registry_name and version is None:
            status = {"training": "training", "failed": "failed"}.get(run.state if run else "", "not_trained")
        return ModelCard(id=name, capability="classify", max_model_len=max_seq_len, version=version,
                         status=status, training=training)

    def _live_version(self, name: str) -> str | None:
        """``vN`` of a registry-backed classifier, else None."""
        try:
            model_id = self.classifiers.resolve(name)
        except MaasError:
            return None
        return model_id.rpartition("/")[2] if model_id != name else None

    def _encoder_handle(self, model: str) -> DeploymentHandle:
        if self.encoder is None or model not in self.encoder_models:
            raise ModelNotFoundError.for_model(model, "embeddings", list(self.encoder_models))
        return self.encoder

    def _embedding_texts(self, request: EmbeddingRequest) -> list[str]:
        self._encoder_handle(request.model)
        if isinstance(request.input, str):
            return [request.input]
        if not all(isinstance(item, str) for item in request.input):
            raise InvalidRequestError("Embeddings take text input, not token ids.", "input")
        return list(request.input)  # type: ignore[arg-type]

    async def _prepare_chat(self, request: ChatCompletionRequest) -> tuple[list[int], GenerationParams]:
        config = self._generator_config(request.model)
        reject_unsupported(request)
        ids = await self.tokenizer.chat_ids.remote(request.model, request.messages, template_tools(request))
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        max_tokens = resolve_max_tokens(request.requested_max_tokens(), len(ids), config, param)
        params = request.generation_params(max_tokens, request.requested_logprobs())
        params = with_tools(params, request, config.tool_call_parser)
        return ids, with_response_format(params, request.response_format)

    async def _prepare_completion(self, request: CompletionRequest) -> tuple[list[list[int]], GenerationParams]:
        config = self._generator_config(request.model)
        reject_unsupported(request)
        prompts = await asyncio.gather(*(
            self.tokenizer.prompt_ids.remote(request.model, p) for p in completion_prompts(request.prompt)
        ))
        longest = max(len(ids) for ids in prompts)
        max_tokens = resolve_max_tokens(request.max_tokens, longest, config, "max_tokens")
        params = request.generation_params(max_tokens, request.logprobs)
        return list(prompts), with_prompt_logprobs(params, request)

    def _stream(self, model: str, ids: list[int], params: GenerationParams) -> DeploymentResponseGenerator:
        return self.generators[model].options(stream=True).generate_stream.remote(ids, params)

    async def _chat_chunks(self, request: ChatCompletionRequest, ids: list[int],
                           params: GenerationParams) -> AsyncIterator[ChatCompletionChunk]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return chat_chunks(new_id("chatcmpl"), now(), request.model,
                           await open_stream(self._stream(request.model, ids, params)), include_usage)

    async def _completion_chunks(self, request: CompletionRequest, prompts: list[list[int]],
                                 params: GenerationParams) -> AsyncIterator[CompletionResponse]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        streams = await open_streams([self._stream(request.model, ids, params) for ids in prompts])
        return completion_chunks(new_id("cmpl"), now(), request.model, streams, params.n,
                                 include_usage)

    # ------------------------------------------------------------------ HTTP routes

    @app.get("/v1/models", response_model=ModelList)
    async def http_models(self, request: Request) -> ModelList:
        cards = self.models().data
        allowed = set(allowed_models(request, [card.id for card in cards]))
        return ModelList(data=[card for card in cards if card.id in allowed])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard)
    async def http_model(self, model_id: str, request: Request) -> ModelCard:
        cards = self.models().data
        return model_card(cards, model_id, allowed_models(request, [card.id for card in cards]))

    @app.post("/v1/chat/completions", response_model=None, responses=streamed(ChatCompletionResponse))
    @model_route
    async def http_chat(self, body: ChatCompletionRequest, request: Request) -> Any:
        if not body.stream:
            return await self.chat(body)
        ids, params = await self._prepare_chat(body)
        return Answer(await self._chat_chunks(body, ids, params))

    @app.post("/v1/completions", response_model=None, responses=streamed(CompletionResponse))
    @model_route
    async def http_completions(self, body: CompletionRequest, request: Request) -> Any:
        if not body.stream:
            return await self.completions(body)
        prompts, params = await self._prepare_completion(body)
        return Answer(await self._completion_chunks(body, prompts, params))

    @app.post("/v1/embeddings", response_model=EmbeddingResponse)
    @model_route
    async def http_embeddings(self, body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
        return await self.embeddings(body)

    @app.post("/v1/classify", response_model=ClassifyResponse)
    @model_route
    async def http_classify(self, body: ClassifyRequest, request: Request) -> ClassifyResponse:
        return await self.classify(body)

    @app.post("/v1/tokenize", response_model=TokenizeResponse)
    @model_route
    async def http_tokenize(self, body: TokenizeRequest, request: Request) -> TokenizeResponse:
        return await self.tokenize(body)

    @app.post("/v1/detokenize", response_model=DetokenizeResponse)
    @model_route
    async def http_detokenize(self, body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
        return await self.detokenize(body)

    def models_used(self, body: Any) -> list[str]:
        """The models an operation will use, defaults resolved: what its API key must allow."""
        if isinstance(body, PipelineRequest):
            return self.pipelines.models_of(body)
        return [body.model]

    @app.get("/health")
    async def http_health(self) -> dict[str, Any]:
        return await self.health()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def http_metrics(self) -> PlainTextResponse:
        text = await recorder.render()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ pipeline HTTP routes
    # The playground page and /v1/pipelines/...; each route calls the handle method above.

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def http_playground(self) -> HTMLResponse:
        """The playground: a static page that calls this API from the browser."""
        return HTMLResponse(playground_html())

    @app.post("/v1/pipelines/entities", response_model=EntitiesResponse)
    @model_route
    async def http_entities(self, body: EntitiesRequest, request: Request) -> EntitiesResponse:
        """Named entities of one text or a list of texts (spaCy), with character offsets.

        ``model`` defaults to the first NER model; ``input[i][start_char:end_char]`` is each
        entity's text (offsets count Python characters, i.e. code points).
        """
        return await self.entities(body)

    @app.post("/v1/pipelines/summarize", response_model=SummarizeResponse)
    @model_route
    async def http_summarize(self, body: SummarizeRequest, request: Request) -> SummarizeResponse:
        """Summarize a text in at most ``max_words`` words with a generator.

        A prompt template over the chat path; ``model`` defaults to the first generator and
        ``temperature`` to 0 (greedy). An answer longer than ``max_words`` is cut there.
        """
        return await self.summarize(body)

    @app.post("/v1/pipelines/translate", response_model=TranslateResponse)
    @model_route
    async def http_translate(self, body: TranslateRequest, request: Request) -> TranslateResponse:
        """Translate a text from ``source_language`` to ``target_language`` (names or codes).

        A translation model serves the pairs it has (see `/v1/models`); other pairs go to a
        generator as a prompt template (greedy by default). `engine` says which answered. An
        unknown pair with no generator, or for a named translation model, is a 400.
        """
        return await self.translate(body)

    @app.post("/v1/pipelines/analyze", response_model=AnalyzeResponse)
    @model_route
    async def http_analyze(self, body: AnalyzeRequest, request: Request) -> AnalyzeResponse:
        """Sentiment, topic, entities and a one-line summary of one text, computed in parallel.

        Each part's model defaults to `sentiment`, `topic`, the first NER model and the first
        generator; a part whose default model is not served is null, and a `*_model: null`
        skips it. `latency_ms` gives each part's time and the total: the parts run
        concurrently, so the total is close to the slowest part, not to the sum.
        """
        return await self.analyze(body)

    @app.post("/v1/pipelines/moderated_chat", response_model=None, responses=streamed(ModeratedChatResponse))
    @model_route
    async def http_moderated_chat(self, body: ModeratedChatRequest, request: Request) -> Any:
        """A chat whose user's last message is classified first (`moderation_model`, default `sentiment`).

        If P(`negative_label`) > `negative_threshold` (default 0.5) a de-escalation system
        prompt is put first. The route taken is in the `x-maas-moderation` header and in
        `moderation`: a field of the response, or, with `stream: true`, of the first
        server-sent event (a chunk with `choices: []`), followed by the chat chunks and
        `data: [DONE]` as in `/v1/chat/completions`. Bad parameters are an error before the
        stream starts.
        """
        if not body.stream:
            result = await self.moderated_chat(body)
            return Answer(result, {"x-maas-moderation": result.moderation.header()})
        moderation, chunks = await self.pipelines.open_moderated_chat_stream(body)
        return Answer(chunks, {"x-maas-moderation": moderation.header()})
