"""``/v1/pipelines/...``: NER and the classic NLP pipelines (composed in ``maas/endpoints/tasks/rules.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from maas.edge.admission import Answer, admitted
from maas.endpoints.common import ingress_of, new_router, streamed
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
)

router = new_router()


@router.post("/v1/pipelines/entities", response_model=EntitiesResponse)
@admitted
async def entities(body: EntitiesRequest, request: Request) -> EntitiesResponse:
    """Named entities of one text or a list of texts (spaCy), with character offsets.

    ``model`` defaults to the first NER model; ``input[i][start_char:end_char]`` is each
    entity's text (offsets count Python characters, i.e. code points).
    """
    return await ingress_of(request).entities(body)


@router.post("/v1/pipelines/summarize", response_model=SummarizeResponse)
@admitted
async def summarize(body: SummarizeRequest, request: Request) -> SummarizeResponse:
    """Summarize a text in at most ``max_words`` words with a generator.

    A prompt template over the chat path; ``model`` defaults to the first generator and
    ``temperature`` to 0 (greedy). An answer longer than ``max_words`` is cut there.
    """
    return await ingress_of(request).summarize(body)


@router.post("/v1/pipelines/translate", response_model=TranslateResponse)
@admitted
async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
    """Translate a text from ``source_language`` to ``target_language`` (names or codes).

    A translation model serves the pairs it has (see `/v1/models`); other pairs go to a
    generator as a prompt template (greedy by default). `engine` says which answered. An
    unknown pair with no generator, or for a named translation model, is a 400.
    """
    return await ingress_of(request).translate(body)


@router.post("/v1/pipelines/analyze", response_model=AnalyzeResponse)
@admitted
async def analyze(body: AnalyzeRequest, request: Request) -> AnalyzeResponse:
    """Sentiment, topic, entities and a one-line summary of one text, computed in parallel.

    Each part's model defaults to `sentiment`, `topic`, the first NER model and the first
    generator; a part whose default model is not served is null, and a `*_model: null`
    skips it. `latency_ms` gives each part's time and the total: the parts run
    concurrently, so the total is close to the slowest part, not to the sum.
    """
    return await ingress_of(request).analyze(body)


@router.post("/v1/pipelines/moderated_chat", response_model=None, responses=streamed(ModeratedChatResponse))
@admitted
async def moderated_chat(body: ModeratedChatRequest, request: Request) -> Any:
    """A chat whose user's last message is classified first (`moderation_model`, default `sentiment`).

    If P(`negative_label`) > `negative_threshold` (default 0.5) a de-escalation system
    prompt is put first. The route taken is in the `x-maas-moderation` header and in
    `moderation`: a field of the response, or, with `stream: true`, of the first
    server-sent event (a chunk with `choices: []`), followed by the chat chunks and
    `data: [DONE]` as in `/v1/chat/completions`. Bad parameters are an error before the
    stream starts.
    """
    ingress = ingress_of(request)
    if not body.stream:
        result = await ingress.moderated_chat(body)
        return Answer(result, {"x-maas-moderation": result.moderation.header()})
    moderation, chunks = await ingress.open_moderated_chat_stream(body)
    return Answer(chunks, {"x-maas-moderation": moderation.header()})
