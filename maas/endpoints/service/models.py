"""``GET /v1/models/{id}``: one model's card (plain Python)."""

from __future__ import annotations

from collections.abc import Iterable

from maas.endpoints.service.protocol import ModelCard
from maas.protocol.errors import ModelNotFoundError


def model_card(cards: list[ModelCard], model_id: str, allowed: Iterable[str]) -> ModelCard:
    """The card of ``model_id``; unknown, or not allowed to the request's API key, is a 404
    (as ``/v1/models`` lists only what the key allows)."""
    allowed = set(allowed)
    for card in cards:
        if card.id == model_id and card.id in allowed:
            return card
    raise ModelNotFoundError(f"The model '{model_id}' does not exist.", param="model")
