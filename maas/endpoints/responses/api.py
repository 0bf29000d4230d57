"""The stored-responses operations: save, retrieve, delete, list input items (the conversation a
response continued, then its own request's), and the context a ``previous_response_id``
continues, each for the owner (API key) asking.

Another owner's response is a 404, as an id that does not exist; so is one past its retention
(``ingress.response_retention_s``: it is deleted when next looked at, and by a sweep at each
save). An owner holds at most ``ingress.max_stored_responses_per_key`` responses and
``ingress.max_stored_response_mib_per_key`` MiB of them: one more is a 413
``storage_quota_exceeded`` (checked before the model runs, and again where the response is added,
under its owner's lock, so requests running at once cannot pass it together). Without keys every
response has the owner None and the caps are the whole service's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, TypeAdapter

from maas.endpoints.generation.protocol import InputItem, InputMessage, ResponseObject, ResponsesRequest
from maas.endpoints.generation.responses import input_items
from maas.endpoints.responses.protocol import InputItemList, ResponseDeleted
from maas.endpoints.responses.store import Held, ResponseStore, StoredResponse
from maas.protocol.base import new_id
from maas.protocol.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError

if TYPE_CHECKING:
    from maas.config import IngressConfig

GLOBAL_SWEEP_EVERY_S = 600.0
"""Each replica sweeps every owner's expired responses at most this often (on a save)."""

RUNNING = frozenset({"queued", "in_progress"})
"""The statuses of a background response not yet ended."""

ITEM_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}

MIB = 1024 * 1024


class ResponseLimits(BaseModel):
    """How long responses are kept, and how many (and how many bytes) one owner may hold."""

    store_by_default: bool = True
    retention_s: int = 30 * 24 * 3600
    max_per_key: int = 10_000
    max_bytes_per_key: int = 1024 * MIB

    @classmethod
    def of(cls, config: IngressConfig) -> ResponseLimits:
        return cls(store_by_default=config.store_responses, retention_s=config.response_retention_s,
                   max_per_key=config.max_stored_responses_per_key,
                   max_bytes_per_key=config.max_stored_response_mib_per_key * MIB)


class StoredResponses:
    def __init__(self, store: ResponseStore, limits: ResponseLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.limits = limits or ResponseLimits()
        self.clock = clock
        self._last_sweep: float | None = None

    def stores(self, request: ResponsesRequest) -> bool:
        """Whether the response to ``request`` is stored (``store``, else the service's default)."""
        return self.limits.store_by_default if request.store is None else request.store

    def get(self, response_id: str, owner: str | None) -> StoredResponse:
        """The owner's stored response: a 404 for an unknown id, another owner's, or an expired one."""
        try:
            return self.store.get(response_id, owner, self.limits.retention_s)
        except KeyError:
            raise not_found(response_id, "response_id") from None

    def retrieve(self, response_id: str, owner: str | None) -> ResponseObject:
        return ResponseObject.model_validate(self.get(response_id, owner).response)

    def delete(self, response_id: str, owner: str | None) -> ResponseDeleted:
        self.get(response_id, owner)  # an expired one is a 404 too
        try:
            self.store.delete(response_id, owner)
        except KeyError:  # deleted at the same time by another request
            raise not_found(response_id, "response_id") from None
        return ResponseDeleted(id=response_id)

    def input_items(self, response_id: str, owner: str | None, limit: int = 20,
                    order: Literal["asc", "desc"] = "desc", after: str | None = None) -> InputItemList:
        """The items used to generate the response, as OpenAI lists them: those of the conversation
        it continues (by ``previous_response_id``: earlier inputs and outputs), then its request's."""
        stored = self.get(response_id, owner)
        items = [*stored.context, *stored.input_items]
        items = items if order == "asc" else items[::-1]
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return InputItemList(data=page, first_id=page[0]["id"] if page else None,
                             last_id=page[-1]["id"] if page else None, has_more=len(items) > limit)

    def context_of(self, request: ResponsesRequest, owner: str | None) -> list[InputItem]:
        """The items a request continues: those of its ``previous_response_id`` and its output
        (none without one); a 404 naming ``previous_response_id`` when it is not the owner's."""
        if not request.previous_response_id:
            return []
        try:
            stored = self.store.get(request.previous_response_id, owner, self.limits.retention_s)
        except KeyError:
            raise not_found(request.previous_response_id, "previous_response_id") from None
        return parse_items([*stored.context, *stored.input_items, *stored.response.get("output", [])])

    def check_room(self, request: ResponsesRequest, owner: str | None) -> None:
        """The 413 of an owner at its cap, before the model runs (when the response is to be stored)."""
        if self.stores(request):
            self._admit(self.store.held(owner), 1)  # any response takes a byte at least

    def prepare(self, request: ResponsesRequest, owner: str | None) -> tuple[list[InputItem], bool]:
        """Before the model runs: the items the request continues, and whether its response is
        stored (a 413 first when its owner is at its cap)."""
        self.check_room(request, owner)
        return self.context_of(request, owner), self.stores(request)

    def save(self, request: ResponsesRequest, response: ResponseObject, context: list[InputItem],
             owner: str | None) -> None:
        """Store ``response`` with its request's input items and ``context`` (what it continued)."""
        self._sweep(owner)
        stored = StoredResponse(response=response.model_dump(mode="json"),
                                input_items=with_ids(input_items(request)),
                                context=[item.model_dump(mode="json", exclude_none=True) for item in context])
        self.store.add(response.id, stored, owner, admit=self._admit)

    def queue(self, request: ResponsesRequest, response: ResponseObject, context: list[InputItem],
              owner: str | None) -> None:
        """Store a background response, ``queued``, with its request (what its runner answers)."""
        self._sweep(owner)
        stored = StoredResponse(response=response.model_dump(mode="json"),
                                input_items=with_ids(input_items(request)),
                                context=[item.model_dump(mode="json", exclude_none=True) for item in context],
                                request=request.model_dump(mode="json", exclude_none=True, by_alias=True))
        self.store.add(response.id, stored, owner, admit=self._admit)

    def cancel(self, response_id: str, owner: str | None) -> ResponseObject:
        """Cancel a background response not yet ended (its runner stops it); an ended one is
        answered as it is; one not in the background is a 400."""
        if not self.get(response_id, owner).response.get("background"):
            raise InvalidRequestError("Only a background response can be cancelled.", "response_id")

        def cancelled(stored: StoredResponse) -> None:
            if stored.response.get("status") in RUNNING:
                stored.response["status"] = "cancelled"

        return ResponseObject.model_validate(self.store.update(response_id, owner, cancelled).response)

    def _admit(self, held: Held, size: int) -> None:
        """A 413 when the owner's responses, with one more of ``size`` bytes, pass a cap."""
        cap, byte_cap = self.limits.max_per_key, self.limits.max_bytes_per_key
        if held.count >= cap:
            raise over_quota(f"{held.count} responses (at most {cap})")
        if held.bytes + size > byte_cap:
            raise over_quota(f"{held.bytes / MIB:.1f} MiB of responses (at most {byte_cap / MIB:g} MiB), "
                             f"and this one takes {size / MIB:.2f} MiB")

    def _sweep(self, owner: str | None) -> None:
        """The owner's expired responses deleted; every owner's, at most every few minutes."""
        now = self.clock()
        every = self._last_sweep is None or now - self._last_sweep >= GLOBAL_SWEEP_EVERY_S
        if every:
            self._last_sweep = now
        self.store.sweep(self.limits.retention_s, owner, every_owner=every)


def with_ids(items: list[InputItem]) -> list[dict[str, Any]]:
    """Input items as stored and listed: each with an id, message content as parts."""
    stored = []
    for item in items:
        data = item.model_dump(mode="json", exclude_none=True)
        data.setdefault("id", new_id(ITEM_ID_PREFIX[item.type]))
        if isinstance(item, InputMessage) and isinstance(item.content, str):
            part = "output_text" if item.role == "assistant" else "input_text"
            data["content"] = [{"type": part, "text": item.content}]
        stored.append(data)
    return stored


ITEMS = TypeAdapter(list[InputItem])


def parse_items(data: list[dict[str, Any]]) -> list[InputItem]:
    """Stored items (and output items) as input items."""
    return ITEMS.validate_python(data)


def over_quota(held: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"This API key stores {held}: delete some (DELETE /v1/responses/{{id}}), or send store: false.",
        "store", code="storage_quota_exceeded")


def not_found(response_id: str, param: str) -> NotFoundError:
    return NotFoundError(f"No response with id '{response_id}'.", param, code="response_not_found")
