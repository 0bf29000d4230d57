"""The ingress deployment: the ``maas`` application's entry point, over the tokenizer, generators,
classifier, encoder, NER and translator deployments.

Each operation is a handle method of :class:`MaasIngress` taking and returning the wire schemas,
so a Ray job calls it through the application's handle exactly as HTTP clients do. The HTTP
routes (``maas/endpoints/<family>/router.py``) are a few lines each over these methods; the app is
built per replica from the config (:func:`maas.endpoints.app.build_app`). The OpenAI request rules
are plain modules beside them in ``maas/endpoints/<family>/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.ingress_batches import BatchMethods
from deployments.ingress_classifiers import ClassifierMethods
from deployments.ingress_feedback import FeedbackMethods
from deployments.ingress_responses import ResponseMethods
from maas.config import AppConfig, GeneratorModelConfig
from maas.edge.auth import KeyAuth
from maas.edge.fair_share import FairShare
from maas.edge.metering import current_meter, cut_off_charged, metered
from maas.endpoints.app import build_app
from maas.endpoints.batches.api import BatchApi, BatchLimits
from maas.endpoints.batches.protocol import BatchCreateRequest
from maas.endpoints.batches.store import BatchStore, FileStore
from maas.endpoints.encoding import scoring
from maas.endpoints.encoding.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from maas.endpoints.encoding.rules import embedding_response, embedding_texts
from maas.endpoints.encoding.scoring_protocol import (
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from maas.endpoints.feedback.protocol import FeedbackRequest
from maas.endpoints.generation import budget
from maas.endpoints.generation import chat as chat_rules
from maas.endpoints.generation import completions as completion_rules
from maas.endpoints.generation.assemble import (
    chat_chunks,
    chat_response,
    completion_chunks,
    completion_response,
)
from maas.endpoints.generation.completions_echo import with_echo
from maas.endpoints.generation.protocol import (
    CompletionRequest,
    CompletionResponse,
)
from maas.endpoints.messages import convert as messages_rules
from maas.endpoints.messages.events import message_events
from maas.endpoints.messages.protocol import (
    CountTokensRequest,
    CountTokensResponse,
    MessageEvent,
    MessageResponse,
    MessagesRequest,
)
from maas.endpoints.responses.api import ResponseLimits, StoredResponses
from maas.endpoints.responses.store import ResponseStore
from maas.endpoints.service.protocol import ModelCard, ModelList
from maas.endpoints.tasks.protocol import (
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
from maas.endpoints.tasks.rules import PipelineBackend, PipelineRequest, Pipelines
from maas.engines.tokenizer import TokenizerSpec
from maas.engines.translation import Translation
from maas.generation_rules.params import check_json_schema
from maas.generation_rules.tools import template_tools
from maas.protocol.base import new_id, now
from maas.protocol.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    GenerationParams,
    GenerationResult,
)
from maas.protocol.errors import (
    ModelNotFoundError,
    ServiceUnavailableError,
    log_client_errors_as_one_line,
)
from maas.serving.calls import result_of, with_session
from maas.serving.coalesce import Coalescer, coalescing
from maas.serving.cold_start import ColdStarts, ReplicaCounts, serve_reader, zero_scaled
from maas.serving.local_tokenizer import InProcessTokenizer
from maas.serving.preparation import PreparationPool
from maas.storage.registry import ModelRegistry
from maas.storage.served_adapters import ServedAdapters, adapter_card_fields

HEALTH_TIMEOUT_S = 10.0


@serve.deployment(name="ingress")
@serve.ingress()
class MaasIngress(BatchMethods, ResponseMethods, ClassifierMethods, FeedbackMethods):
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
        if config.generators:  # imports the schema checker now, not on a client's first schema
            check_json_schema('{"type": "object"}')
        self.tokenizer = InProcessTokenizer(  # prompts tokenized here: no Ray hop before the engine
            tokenizer, [TokenizerSpec(g.name, g.path, g.max_model_len) for g in config.generators])
        self.preparation = PreparationPool()  # templating, tokenizing, schemas: off the event loop
        self.generators = generators
        self.classifier = classifier
        self.encoder = encoder
        self.generator_configs = {g.name: g for g in config.generators}
        # scale to zero: Serve's replica counts, read only while a deployment may have none
        self.cold = ColdStarts(zero_scaled(config), ReplicaCounts(serve_reader(), config.ingress.replica_status_refresh_s))
        self.model_deployments = config.model_deployments()
        self.fair_share = FairShare.of(config, lambda model: self._generator_config(model).name)
        self.adapters = ServedAdapters(config.generators, ModelRegistry(config.registry_dir))
        self._adapter_handles: dict[str, DeploymentHandle] = {}
        self._setup_classifiers(config)  # classify, challengers' shadow traffic (ingress_classifiers.py)
        self._setup_feedback(config)  # answers' inputs remembered, /v1/feedback (ingress_feedback.py)
        self.encoder_models = {m.name for m in config.encoder.models}
        self.embed_calls = Coalescer(lambda model, texts: result_of(
            self.encoder.embed.remote(model, texts)), **coalescing(config.encoder))
        # --- NER and the pipelines (maas/endpoints/tasks/rules.py) ---
        self.ner = ner
        self.ner_models = tuple(m.name for m in config.ner.models)
        self.translator = translator
        self.pipelines = Pipelines(PipelineBackend(
            chat=self.chat, open_chat_stream=self.open_chat_stream, classify=self.classify,
            entities=self.entities, generators=self.generator_configs,
            classifiers=frozenset(m.name for m in config.classifier.models), ner_models=self.ner_models,
            translate_text=self._translate_text, translators=config.translator.pairs() if translator else {},
        ))

        self.batch_api = BatchApi(FileStore(config.batch_dir), BatchStore(config.batch_dir),
                                  self._start_batch_runner, BatchLimits.of(config.ingress),
                                  key_of=lambda owner: self.key_auth.key_by_id(owner))
        self.key_auth = KeyAuth()  # the app's, once built
        self.stored_responses = StoredResponses(ResponseStore(config.batch_dir), ResponseLimits.of(config.ingress))
        self._served = frozenset([*self.generator_configs, *self.adapters.names(), *self.encoder_models,
                                  *(m.name for m in config.classifier.models), *self.ner_models,
                                  *self.pipelines.backend.translators])

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's HTTP app (Serve calls this after ``__init__``)."""
        shared = self.config.ingress.deployment.can_run_several() and self.config.ingress.api_keys_file
        app = build_app(self, self.config.ingress, serve.get_replica_context().app_name if shared else None)
        self.key_auth = app.state.key_auth
        self.recorder = app.state.recorder  # shadow traffic's metrics join the app's buffer
        return app

    def served_models(self) -> frozenset[str]:
        """The names of every served model: the only ``model`` labels of the metrics."""
        return self._served

    async def models_used(self, body: Any, key_id: str | None = None) -> list[str]:
        """The models an operation will use, defaults resolved: what its API key must allow.
        A batch's are those of its input file, read (once, off the event loop) here."""
        if isinstance(body, PipelineRequest):
            return self.pipelines.models_of(body)
        if isinstance(body, BatchCreateRequest):
            return await self.preparation.run(self.batch_api.models_of, body, key_id)
        if isinstance(body, FeedbackRequest):  # the model of the answer it names (a 404 if none)
            return [await self.feedback_model(body, key_id)]
        return [body.model]

    # ------------------------------------------------------------------ handle methods

    async def models(self) -> ModelList:
        """Every served model with its capability; ``status: cold`` where its deployment has scaled
        to zero (Serve's replica counts, read at most every ``replica_status_refresh_s``)."""
        await self.cold.refreshed()
        return ModelList(data=[self._with_cold(card) for card in self._model_cards()])

    def _with_cold(self, card: ModelCard) -> ModelCard:
        deployment = self.model_deployments.get(card.parent or card.id)
        if card.status == "ready" and deployment is not None and self.cold.is_cold(deployment):
            return card.model_copy(update={"status": "cold"})
        return card

    def _model_cards(self) -> list[ModelCard]:
        cards = [ModelCard(id=g.name, capability="generate", max_model_len=g.max_model_len)
                 for g in self.config.generators]
        cards += [ModelCard(**adapter_card_fields(self.adapters, name)) for name in self.adapters.names()]
        cards += [self._classifier_card(m.name, m.max_seq_len) for m in self.config.classifier.models]
        cards += [ModelCard(id=m.name, capability="embed", max_model_len=m.max_seq_len)
                  for m in self.config.encoder.models]
        cards += [ModelCard(id=name, capability="entities") for name in self.ner_models]  # NER
        cards += [ModelCard(id=name, capability="translate", pairs=pairs)
                  for name, pairs in self.pipelines.backend.translators.items()]
        return cards

    async def chat(self, request: ChatCompletionRequest, owner: str | None = None,
                   remember: bool = False) -> ChatCompletionResponse:
        """A whole chat completion (``stream`` is ignored; see :meth:`chat_stream`); with
        ``remember``, its input is kept for feedback by ``owner`` (:mod:`deployments.ingress_feedback`)."""
        ids, params = await self._prepare_chat(request)
        await self._generator_ready(request.model)
        handle, served = self._generator_route(request.model)
        result: GenerationResult = await self.fair_share.call(  # when its tenant's turn comes
            request.model, params.n, lambda: self._generate(handle, ids, params))
        response = chat_response(served, result)
        if remember:
            await self._remember_chat(request, response.id, served, owner, response)
        return response

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """A chat completion as chunks; call through ``handle.options(stream=True)``."""
        async for chunk in await self.open_chat_stream(request):
            yield chunk

    async def completions(self, request: CompletionRequest) -> CompletionResponse:
        """A whole text completion for one or more prompts."""
        prompts, params = await self._prepare_completion(request)
        await self._generator_ready(request.model)
        handle, served = self._generator_route(request.model)
        results = await self.fair_share.calls(request.model, params.n, [
            lambda ids=ids: self._generate(handle, ids, params) for ids in prompts])
        response = completion_response(served, results, params.n)
        return with_echo(response, results, request, completion_rules.completion_prompts(request.prompt))

    async def completions_stream(self, request: CompletionRequest) -> AsyncIterator[CompletionResponse]:
        """A text completion as chunks; call through ``handle.options(stream=True)``."""
        async for chunk in await self.open_completion_stream(request):
            yield chunk

    async def messages(self, request: MessagesRequest) -> MessageResponse:
        """A whole message of Anthropic's Messages API (``stream`` is ignored), over the chat path."""
        chat = messages_rules.chat_request(request).model_copy(update={"stream": False, "stream_options": None})
        return messages_rules.message_from_chat(await self.chat(chat))

    async def messages_stream(self, request: MessagesRequest) -> AsyncIterator[MessageEvent]:
        """A message as the Messages API's events; call through ``handle.options(stream=True)``."""
        async for event in await self.open_messages_stream(request):
            yield event

    async def count_message_tokens(self, request: CountTokensRequest) -> CountTokensResponse:
        """The prompt tokens of a Messages request, as :meth:`messages` counts them."""
        ids, _ = await self._prepare_chat(messages_rules.chat_request(request))
        return CountTokensResponse(input_tokens=len(ids))

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Unit-length sentence embeddings of one or more texts."""
        await self._encoder_ready(request.model)  # 404 for a model the encoder does not serve
        vectors = await self.embed_calls.submit(request.model, embedding_texts(request))
        return embedding_response(request, vectors)

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        """Cosine similarity of text pairs from the encoder's embeddings (vLLM's ``/v1/score``)."""
        await self._encoder_ready(request.model)  # 404 for a model the encoder does not serve
        pairs = scoring.score_pairs(request)
        texts = scoring.distinct([text for pair in pairs for text in pair])
        vectors = await self.embed_calls.submit(request.model, texts)
        return scoring.score_response(request, pairs, texts, vectors)

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        """Documents ranked by the cosine of their embedding to the query's, best first."""
        await self._encoder_ready(request.model)  # 404 for a model the encoder does not serve
        texts = scoring.distinct([request.query, *request.texts()])
        vectors = await self.embed_calls.submit(request.model, texts)
        return scoring.rerank_response(request, texts, vectors)

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """Token ids of a prompt or of chat messages (vLLM's ``/tokenize``)."""
        budget.check_tokenize(request, self.config.ingress.limits)
        await self._ready("tokenizer", self.tokenizer, request.model)
        return await self.tokenizer.tokenize.remote(request)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        """Text of token ids (vLLM's ``/detokenize``)."""
        await self._ready("tokenizer", self.tokenizer, request.model)
        return await self.tokenizer.detokenize.remote(request)

    async def health(self) -> dict[str, Any]:
        """A real call into every deployment; raises 503 if any fails or hangs. A deployment that
        may scale to zero is not called (that would wake it): Serve's status of it counts, and
        one with no replica running is listed as ``cold``, which is healthy."""
        checks = {"tokenizer": ("tokenizer", self.tokenizer)}
        checks.update({f"generator:{name}": (self.generator_configs[name].deployment_name(), h)
                       for name, h in self.generators.items()})
        checks.update({n: (n, h) for n, h in (("classifier", self.classifier), ("encoder", self.encoder),
                                              ("ner", self.ner), ("translator", self.translator)) if h is not None})
        cold, failing = await self.cold.health()
        if failing:
            raise ServiceUnavailableError(f"Unhealthy: {len(failing)} deployment(s) failing in Serve.")
        try:
            await asyncio.wait_for(asyncio.gather(*(
                h.ping.remote() for d, h in checks.values() if not self.cold.scales_to_zero(d))), HEALTH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            raise ServiceUnavailableError(f"Unhealthy: {type(exc).__name__}.") from None
        return {"status": "ok", "deployments": sorted(checks),
                "cold": sorted(name for name, (d, _) in checks.items() if d in cold)}

    # ------------------------------------------------------------------ pipeline handle methods
    # NER and the classic NLP pipelines; the pipelines themselves are in maas/endpoints/tasks/rules.py.

    async def entities(self, request: EntitiesRequest) -> EntitiesResponse:
        """Named entities (with character offsets) of one or more texts, from the NER deployment."""
        model = request.model or next(iter(self.ner_models), None)
        if self.ner is None or model not in self.ner_models:
            raise ModelNotFoundError.for_model(model or "(default)", "named-entity recognition",
                                               list(self.ner_models))
        await self._ready("ner", self.ner, model)
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
        await self._ready("translator", self.translator, model)
        return (await self.translator.translate.remote(model, pair, [text]))[0]  # type: ignore[union-attr]

    async def open_chat_stream(self, request: ChatCompletionRequest, owner: str | None = None,
                               remember: bool = False) -> AsyncIterator[ChatCompletionChunk]:
        """Validate a chat request and open its stream now (errors before any byte is sent); with
        ``remember``, its input is kept for feedback by ``owner`` under the stream's id."""
        ids, params = await self._prepare_chat(request)
        response_id = new_id("chatcmpl")
        if remember:
            await self._remember_chat(request, response_id, self._generator_route(request.model)[1], owner)
        return await self._chat_chunks(request, ids, params, response_id)

    async def open_completion_stream(self, request: CompletionRequest) -> AsyncIterator[CompletionResponse]:
        """Validate a completion request and open its streams now (errors before any byte is sent)."""
        prompts, params = await self._prepare_completion(request)
        return await self._completion_chunks(request, prompts, params)

    async def open_messages_stream(self, request: MessagesRequest) -> AsyncIterator[MessageEvent]:
        """Validate a Messages request and open its stream now (errors before any byte is sent)."""
        chat = messages_rules.chat_request(request)
        ids, params = await self._prepare_chat(chat)
        return message_events(request.model, len(ids), await self._chat_chunks(chat, ids, params))

    async def open_moderated_chat_stream(
        self, request: ModeratedChatRequest
    ) -> tuple[Any, AsyncIterator[ChatCompletionChunk]]:
        """The moderation decision and the opened chat stream of a moderated chat."""
        return await self.pipelines.open_moderated_chat_stream(request)

    # ------------------------------------------------------------------ internals

    def _generator_config(self, model: str) -> GeneratorModelConfig:
        if model not in self.generator_configs and self.adapters.is_adapter_name(model):
            return self.adapters.generator(model)  # a LoRA adapter runs on its base model's generator
        if model not in self.generator_configs:
            raise ModelNotFoundError.for_model(model, "generation",
                                               [*self.generator_configs, *self.adapters.names()])
        return self.generator_configs[model]

    def _generator_route(self, model: str) -> tuple[DeploymentHandle, str]:
        """The generator handle serving ``model`` and the model name its answer carries: a LoRA
        adapter goes to its base model's generator with the adapter version as Serve's multiplexed
        model id (resolved per request: a rollout takes effect at the next request), and the
        answer names that version (``topic-lora/v2``), as classifiers' answers do."""
        if model in self.generators:
            return self.generators[model], model
        generator, adapter_id = self.adapters.resolve(model)
        handle = self._adapter_handles.get(adapter_id)
        if handle is None:
            handle = self.generators[generator].options(multiplexed_model_id=adapter_id)
            self._adapter_handles[adapter_id] = handle
        return handle, adapter_id

    async def _encoder_ready(self, model: str) -> None:
        if self.encoder is None or model not in self.encoder_models:
            raise ModelNotFoundError.for_model(model, "embeddings", list(self.encoder_models))
        await self._ready("encoder", self.encoder, model)

    async def _generator_ready(self, model: str) -> None:
        """Wait for a replica of ``model``'s generator if it has scaled to zero (bounded)."""
        config = self._generator_config(model)
        await self._ready(config.deployment_name(), self.generators[config.name], model)

    async def _ready(self, deployment: str, handle: Any, model: str) -> None:
        """Return once ``deployment`` runs a replica: at once unless it scaled to zero, where its
        ``ping`` wakes it (maas/serving/cold_start.py)."""
        await self.cold.ready(deployment, lambda: handle.ping.remote(), model)

    async def _prepare_chat(self, request: ChatCompletionRequest) -> tuple[list[int], GenerationParams]:
        """The prompt's ids and the engine parameters: the model, the request's budget by its fields
        (sequences, tools, schema size) and the prompt's length checked here (cheap); the rules,
        template, tokens, schemas and the budget by token counts in the preparation pool."""
        config = self._generator_config(request.model)
        budget.check_chat(request, self.config.ingress.limits)
        self.tokenizer.prompts.check_size(config.name, [m.text() for m in request.messages], "messages")
        return await self.preparation.run(self._chat_inputs, request, config)

    async def _prepare_completion(self, request: CompletionRequest) -> tuple[list[list[int]], GenerationParams]:
        config = self._generator_config(request.model)
        budget.check_completion(request, self.config.ingress.limits)
        texts = [p for p in completion_rules.completion_prompts(request.prompt) if isinstance(p, str)]
        self.tokenizer.prompts.check_size(config.name, texts, "prompt")
        return await self.preparation.run(self._completion_inputs, request, config)

    def _chat_inputs(self, request: ChatCompletionRequest,
                     config: GeneratorModelConfig) -> tuple[list[int], GenerationParams]:
        """Runs in the preparation pool (CPU-heavy: tool schemas, chat template, tokenizer)."""
        chat_rules.reject_unsupported(request)
        ids = self.tokenizer.prompts.chat_ids(config.name, request.messages, template_tools(request))
        params = chat_rules.chat_params(request, len(ids), config)
        budget.check_chat_tokens(request, len(ids), params, self.config.ingress.limits)
        return ids, params

    def _completion_inputs(self, request: CompletionRequest,
                           config: GeneratorModelConfig) -> tuple[list[list[int]], GenerationParams]:
        """Runs in the preparation pool (CPU-heavy: tokenizer, ``response_format`` schema)."""
        completion_rules.reject_unsupported(request)
        prompts = [self.tokenizer.prompts.prompt_ids(config.name, p)
                   for p in completion_rules.completion_prompts(request.prompt)]
        params = completion_rules.completion_params(request, max(len(ids) for ids in prompts), config)
        budget.check_completion_tokens(request, [len(ids) for ids in prompts], params, self.config.ingress.limits)
        return prompts, params

    async def _generate(self, handle: DeploymentHandle, ids: list[int], params: GenerationParams) -> GenerationResult:
        """A whole generation; cut off (client gone, deadline), it is charged the most it could be."""
        call = with_session(handle).generate.remote(ids, params)
        return await cut_off_charged(result_of(call), len(ids) + params.n * params.max_tokens)

    def _stream(self, model: str, ids: list[int], params: GenerationParams) -> DeploymentResponseGenerator:
        return with_session(self._generator_route(model)[0]).options(stream=True).generate_stream.remote(ids, params)

    async def _chat_chunks(self, request: ChatCompletionRequest, ids: list[int], params: GenerationParams,
                           response_id: str | None = None) -> AsyncIterator[ChatCompletionChunk]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        await self._generator_ready(request.model)
        results = metered(await self.fair_share.open_stream(  # its sequences when its tenant's turn comes
            request.model, params.n, lambda: self._stream(request.model, ids, params)), current_meter())
        return chat_chunks(response_id or new_id("chatcmpl"), now(), request.model, results, include_usage)

    async def _completion_chunks(self, request: CompletionRequest, prompts: list[list[int]],
                                 params: GenerationParams) -> AsyncIterator[CompletionResponse]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        await self._generator_ready(request.model)
        meter = current_meter()
        opened = await self.fair_share.open_streams(request.model, params.n, [
            lambda ids=ids: self._stream(request.model, ids, params) for ids in prompts])
        streams = [metered(stream, meter) for stream in opened]
        return completion_chunks(new_id("cmpl"), now(), request.model, streams, params.n,
                                 include_usage)

