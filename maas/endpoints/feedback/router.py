"""``POST /v1/feedback``: the correct label of a classification, or a rating of a chat completion."""

from __future__ import annotations

from fastapi import Request

from maas.edge.admission import admitted
from maas.endpoints.common import ingress_of, new_router, owner_of
from maas.endpoints.feedback.protocol import FeedbackRequest, FeedbackResponse

router = new_router()


@router.post("/v1/feedback", response_model=FeedbackResponse)
@admitted
async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    """Feedback on an answer of this API key, named by its `id` (`response_id`): for a
    `/v1/classify` answer the correct `label` (one of the model's `labels`; with `index`, for one
    of its texts, else for every text), for a `/v1/chat/completions` answer a `rating` (-1, 0 or 1).
    The answer's input is stored with it, owned by the key; a registry classifier's feedback is
    what `maas train <model> --with-feedback` adds to its training split.

    An unknown, expired (`ingress.feedback_retention_s`) or another key's id: 404
    `response_not_found`. A label the model does not have: 400 naming `label`. Past
    `ingress.max_feedback_per_key` entries for the model: 413 `storage_quota_exceeded`.
    """
    return await ingress_of(request).feedback(body, owner_of(request))
