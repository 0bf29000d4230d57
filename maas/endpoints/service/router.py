"""The service's own routes: the model list, health, metrics and the playground page."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from maas.edge.auth import allowed_models
from maas.endpoints.common import ingress_of, new_router
from maas.endpoints.service.models import model_card
from maas.endpoints.service.playground import playground_html
from maas.endpoints.service.protocol import ModelCard, ModelList

router = new_router()


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """Every served model the API key may use, with its capability (and training state)."""
    cards = (await ingress_of(request).models()).data
    allowed = set(allowed_models(request, [card.id for card in cards]))
    return ModelList(data=[card for card in cards if card.id in allowed])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, request: Request) -> ModelCard:
    """One served model's card; unknown, or not allowed to the API key, is a 404."""
    cards = (await ingress_of(request).models()).data
    return model_card(cards, model_id, allowed_models(request, [card.id for card in cards]))


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """A real call into every deployment: 503 if any fails or hangs."""
    return await ingress_of(request).health()


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics of every ingress replica."""
    text = await request.app.state.recorder.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground() -> HTMLResponse:
    """The playground: a static page that calls this API from the browser."""
    return HTMLResponse(playground_html())
