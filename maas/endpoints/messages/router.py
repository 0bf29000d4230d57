"""``/v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API over the chat path."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from maas.edge.admission import Answer, admitted
from maas.edge.http import ROUTE_ERRORS
from maas.endpoints.common import ingress_of, new_router
from maas.endpoints.messages.events import ANTHROPIC_EVENTS
from maas.endpoints.messages.protocol import (
    AnthropicErrorResponse,
    CountTokensRequest,
    CountTokensResponse,
    MessageResponse,
    MessagesRequest,
)

router = new_router()


def anthropic_responses(answer: type) -> dict[int | str, dict[str, Any]]:
    """OpenAPI of a Messages route: its answer, and each error in Anthropic's body."""
    responses: dict[int | str, dict[str, Any]] = {200: {"model": answer}}
    if answer is MessageResponse:
        responses[200].update(description="The message; with `stream: true`, Anthropic's server-sent events "
                              "(`event: message_start` ... `event: message_stop`). A stream that fails after "
                              "it started ends with `event: error` and Anthropic's error body.",
                              content={"text/event-stream": {"schema": {"type": "string"}}})
    for status in ROUTE_ERRORS.keys() - {409}:  # the statuses of every POST route (maas.edge.http)
        responses[status] = {"model": AnthropicErrorResponse, "description": ROUTE_ERRORS[status]}
    return responses


@router.post("/v1/messages", response_model=None, responses=anthropic_responses(MessageResponse))
@admitted
async def messages(body: MessagesRequest, request: Request) -> Any:
    """Anthropic's Messages API over the chat path: `system`, turns of text, `tool_use` and
    `tool_result` blocks, `tools` and `tool_choice`, `max_tokens`, `stop_sequences`,
    `temperature`, `top_p`, `top_k`; with `stream: true`, Anthropic's events. Errors have
    Anthropic's body `{"type": "error", "error": {"type", "message"}}`."""
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.messages(body)
    return Answer(await ingress.open_messages_stream(body), framing=ANTHROPIC_EVENTS)


@router.post("/v1/messages/count_tokens", response_model=CountTokensResponse,
             responses=anthropic_responses(CountTokensResponse))
@admitted
async def count_tokens(body: CountTokensRequest, request: Request) -> CountTokensResponse:
    """The prompt tokens of a Messages request (system, messages and tools), as `/v1/messages`
    would count them."""
    return await ingress_of(request).count_message_tokens(body)
