"""``/v1/chat/completions``, ``/v1/completions`` and ``/v1/responses``: whole answers or
server-sent events."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from maas.edge.admission import Answer, admitted
from maas.endpoints.common import ingress_of, new_router, streamed
from maas.endpoints.generation.protocol import (
    CompletionRequest,
    CompletionResponse,
    ResponseObject,
    ResponsesRequest,
)
from maas.protocol.chat import ChatCompletionRequest, ChatCompletionResponse

router = new_router()


@router.post("/v1/chat/completions", response_model=None, responses=streamed(ChatCompletionResponse))
@admitted
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.chat(body)
    return Answer(await ingress.open_chat_stream(body))


@router.post("/v1/completions", response_model=None, responses=streamed(CompletionResponse))
@admitted
async def completions(body: CompletionRequest, request: Request) -> Any:
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.completions(body)
    return Answer(await ingress.open_completion_stream(body))


@router.post("/v1/responses", response_model=None, responses=streamed(ResponseObject))
@admitted
async def responses(body: ResponsesRequest, request: Request) -> Any:
    """OpenAI's Responses API for text, over the chat path: `input` (a text or messages),
    `instructions`, `max_output_tokens`, `temperature`, `top_p`, `text.format`, and with
    `stream: true` the Responses events (`response.created` ... `response.completed`).

    Responses are not stored: `store` is answered false; `previous_response_id`, `background`
    and `tools` are a 400 (tools are served by `/v1/chat/completions`).
    """
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.responses(body)
    return Answer(await ingress.open_responses_stream(body))
