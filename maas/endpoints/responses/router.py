"""``/v1/responses``: create a response (stored by default), retrieve it, list its input items,
delete it. Stored responses belong to the API key that made them (another key gets 404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query, Request
from starlette.concurrency import run_in_threadpool

from maas.edge.admission import Answer, admitted
from maas.endpoints.common import ingress_of, new_router, owner_of, streamed
from maas.endpoints.generation.protocol import ResponseObject, ResponsesRequest
from maas.endpoints.responses.protocol import InputItemList, ResponseDeleted
from maas.endpoints.responses.store import MAX_RESPONSE_ID_LENGTH

router = new_router()

ResponseId = Annotated[str, Path(max_length=MAX_RESPONSE_ID_LENGTH, description="A response id.")]


@router.post("/v1/responses", response_model=None, responses=streamed(ResponseObject))
@admitted
async def create_response(body: ResponsesRequest, request: Request) -> Any:
    """OpenAI's Responses API over the chat path: `input` (a text, or items: messages,
    `function_call` and `function_call_output`), `instructions`, `max_output_tokens`,
    `temperature`, `top_p`, `text.format`, function `tools` with `tool_choice`, and with
    `stream: true` the Responses events (`response.created` ... `response.completed`).

    The response is stored unless `store` is false (default `ingress.store_responses`), for
    `GET /v1/responses/{response_id}` and `previous_response_id`: a stored response of this key
    whose input and output come before `input` (unknown: 404; a conversation that no longer
    fits the model's context: 400 `context_length_exceeded`). Over the key's stored responses
    (`ingress.max_stored_responses_per_key`, `ingress.max_stored_response_mib_per_key`): 413
    `storage_quota_exceeded`. With `background: true` (needs `store`; not with `stream`) the request
    is prepared now (a prompt past the context is a 400 here) and the answer is the response
    `queued`: it runs apart from the request, even if this ingress replica is lost; poll it
    (`in_progress`, then `completed`, `incomplete`, `failed` or `cancelled`). A stream whose
    client leaves before its end is not stored (its generation is aborted and charged).
    """
    ingress = ingress_of(request)
    if not body.stream:
        return await ingress.responses(body, owner_of(request))
    return Answer(await ingress.open_responses_stream(body, owner_of(request)))


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def retrieve_response(response_id: ResponseId, request: Request) -> ResponseObject:
    """A stored response of this API key (404 for another key's, a deleted or an expired one)."""
    return await run_in_threadpool(ingress_of(request).retrieve_response, response_id, owner_of(request))


@router.delete("/v1/responses/{response_id}", response_model=ResponseDeleted)
async def delete_response(response_id: ResponseId, request: Request) -> ResponseDeleted:
    """Delete a stored response; a response that continued it keeps its own copy of the conversation."""
    return await run_in_threadpool(ingress_of(request).delete_response, response_id, owner_of(request))


@router.get("/v1/responses/{response_id}/input_items", response_model=InputItemList)
async def list_input_items(response_id: ResponseId, request: Request,
                           limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = Query("desc"),
                           after: str | None = Query(None, max_length=MAX_RESPONSE_ID_LENGTH)) -> InputItemList:
    """The items used to generate a stored response, each with an id (newest first by default):
    those of the conversation it continued by `previous_response_id` (earlier inputs and outputs),
    then its own request's, as OpenAI lists them."""
    return await run_in_threadpool(ingress_of(request).response_input_items, response_id,
                                   owner_of(request), limit, order, after)


@router.post("/v1/responses/{response_id}/cancel", response_model=ResponseObject)
async def cancel_response(response_id: ResponseId, request: Request) -> ResponseObject:
    """Cancel a background response not yet ended: it ends `cancelled` and its generation is
    aborted; an ended one is answered as it is; one not in the background is a 400."""
    return await run_in_threadpool(ingress_of(request).cancel_response, response_id, owner_of(request))
