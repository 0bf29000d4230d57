"""The wire shapes of stored responses: a deletion, and a page of input items."""

from __future__ import annotations

from typing import Any, Literal

from maas.protocol.base import WireModel


class ResponseDeleted(WireModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(WireModel):
    """``GET /v1/responses/{id}/input_items``: the items used to generate the response (the
    conversation it continued, then its request's)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
