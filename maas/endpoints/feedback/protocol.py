"""The wire shapes of ``/v1/feedback``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from maas.protocol.base import MAX_NAME_LENGTH, RequestModel, WireModel, new_id, now
from maas.protocol.errors import InvalidRequestError
from maas.storage.files import MAX_RESPONSE_ID_LENGTH


class FeedbackRequest(RequestModel):
    """A correct label for a classification, or a rating of a chat completion, by its response id."""

    response_id: str = Field(..., min_length=1, max_length=MAX_RESPONSE_ID_LENGTH,
                             description="The `id` of a classify or chat completion answer of this API key.")
    label: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH,
                              description="For a classification: the correct label, one of the model's `labels`.")
    index: int | None = Field(None, ge=0, description="For a classification of several texts: which one "
                              "(its `index` in the answer); left out, the label is for every text.")
    rating: Literal[-1, 0, 1] | None = Field(None, description="For a chat completion: -1 (bad), 0, or 1 (good).")

    @model_validator(mode="after")
    def _label_or_rating(self) -> FeedbackRequest:
        if (self.label is None) == (self.rating is None):
            raise InvalidRequestError("Send either `label` (for a classification) or `rating` "
                                      "(for a chat completion).", "label" if self.label is None else "rating")
        return self


class FeedbackResponse(WireModel):
    """The stored feedback."""

    id: str = Field(default_factory=lambda: new_id("feedback"))
    object: Literal["feedback"] = "feedback"
    created_at: int = Field(default_factory=now)
    response_id: str
    model: str = Field(description="The model (version) that gave the answer.")
    label: str | None = None
    rating: int | None = None
    examples: int = Field(description="Entries stored by this feedback (one per labelled text).")
    held: int = Field(description="Feedback entries this API key now holds for the model.")
