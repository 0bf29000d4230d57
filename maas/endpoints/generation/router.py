"""``/v1/chat/completions`` and ``/v1/completions``: whole answers or server-sent events
(``/v1/responses`` is in :mod:`maas.endpoints.responses.router`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from maas.edge.admission import Answer, admitted
from maas.endpoints.common import ingress_of, new_router, owner_of, streamed
from maas.endpoints.generation.protocol import (
    CompletionRequest,
    CompletionResponse,
)
from maas.protocol.chat import ChatCompletionRequest, ChatCompletionResponse

router = new_router()


@router.post("/v1/chat/completions", response_model=None, responses=streamed(ChatCompletionResponse))
@admitted
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.chat(body, owner_of(request), remember=True)
    return Answer(await ingress.open_chat_stream(body, owner_of(request), remember=True))


@router.post("/v1/completions", response_model=None, responses=streamed(CompletionResponse))
@admitted
async def completions(body: CompletionRequest, request: Request) -> Any:
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.completions(body)
    return Answer(await ingress.open_completion_stream(body))
