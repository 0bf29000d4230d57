"""The feedback operations: remember an answer's input, and store a label or rating for it.

Every classify and chat completion answer has an ``id``; the ingress remembers its input for a
while (:class:`maas.storage.feedback.RecentInputs`, per API key, bounded) so that
``POST /v1/feedback`` can name it. The feedback is stored with that input, owned by the key
(:class:`maas.storage.feedback.FeedbackLog`): for a registry classifier in the registry, where
``maas train --with-feedback`` reads it. Another key's response id is a 404, as an unknown or
expired one; a label the model does not have is a 400 naming ``label``; past
``ingress.max_feedback_per_key`` entries for a model, a 413 ``storage_quota_exceeded``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from maas.endpoints.feedback.protocol import FeedbackRequest, FeedbackResponse
from maas.protocol.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from maas.storage.feedback import (
    FeedbackEntry,
    FeedbackLog,
    FeedbackQuotaError,
    RecentInputs,
    RememberedInput,
    classifier_feedback_folder,
    model_folder_name,
)

if TYPE_CHECKING:
    from maas.config import IngressConfig

MIB = 1024 * 1024


class FeedbackLimits(BaseModel):
    """How long answers' inputs are remembered, how many per key, and how much feedback a key may give."""

    retention_s: int = 24 * 3600
    max_inputs_per_key: int = 10_000
    max_input_bytes_per_key: int = 64 * MIB
    max_feedback_per_key: int = 10_000

    @classmethod
    def of(cls, config: IngressConfig) -> FeedbackLimits:
        return cls(retention_s=config.feedback_retention_s, max_inputs_per_key=config.max_feedback_inputs_per_key,
                   max_input_bytes_per_key=config.max_feedback_input_mib_per_key * MIB,
                   max_feedback_per_key=config.max_feedback_per_key)


class Feedback:
    """Remembered inputs and the feedback on them, for the owner (API key id) asking.

    ``registry_name(model)``: the registry name of a served registry classifier, else None;
    its feedback goes to the registry (``registry_root``), any other model's under ``root``."""

    def __init__(self, root: str | Path, registry_root: str | Path, registry_name: Callable[[str], str | None],
                 limits: FeedbackLimits | None = None) -> None:
        self.limits = limits or FeedbackLimits()
        self.inputs = RecentInputs(root, self.limits.retention_s, self.limits.max_inputs_per_key,
                                   self.limits.max_input_bytes_per_key)
        self.root, self.registry_root, self.registry_name = Path(root), Path(registry_root), registry_name

    @property
    def enabled(self) -> bool:
        return self.limits.retention_s > 0

    def remember(self, response_id: str, record: RememberedInput, owner: str | None) -> None:
        """Keep an answer's input (blocking: shared storage)."""
        if self.enabled:
            self.inputs.add(response_id, record, owner)

    def answer_of(self, response_id: str, owner: str | None) -> RememberedInput:
        """The owner's remembered answer; a 404 for an unknown, expired or another key's id."""
        try:
            return self.inputs.get(response_id, owner)
        except KeyError:
            raise NotFoundError(f"No classify or chat completion answer with id '{response_id}' for this "
                                "API key (answers are remembered for feedback for "
                                f"{self.limits.retention_s} s).", "response_id", code="response_not_found") from None

    def log_of(self, model: str) -> FeedbackLog:
        """Where the feedback of ``model`` (as its request named it) is stored."""
        name = self.registry_name(model.partition("/")[0])
        if name is not None:
            return FeedbackLog(classifier_feedback_folder(self.registry_root, name))
        return FeedbackLog(self.root / "feedback" / model_folder_name(model))

    def give(self, request: FeedbackRequest, owner: str | None) -> FeedbackResponse:
        """Store the feedback of ``request`` with its answer's input (blocking: shared storage)."""
        answer = self.answer_of(request.response_id, owner)
        entries = classification_entries(request, answer) if answer.kind == "classify" \
            else rating_entries(request, answer)
        try:
            held = self.log_of(answer.model).append(owner, entries, self.limits.max_feedback_per_key)
        except FeedbackQuotaError:
            raise PayloadTooLargeError(
                f"This API key holds the most feedback entries for '{answer.model}' "
                f"({self.limits.max_feedback_per_key}, ingress.max_feedback_per_key).",
                "response_id", code="storage_quota_exceeded") from None
        return FeedbackResponse(response_id=request.response_id, model=answer.model_id, label=request.label,
                                rating=request.rating, examples=len(entries), held=held)


def classification_entries(request: FeedbackRequest, answer: RememberedInput) -> list[FeedbackEntry]:
    """One labelled entry per text the label is for; 400s for a rating or a label the model lacks."""
    if request.label is None:
        raise InvalidRequestError("A classification takes a `label`, not a `rating`.", "rating")
    if request.label not in answer.labels:
        raise InvalidRequestError(f"'{request.label}' is not a label of {answer.model_id}: "
                                  f"use one of {', '.join(answer.labels)}.", "label")
    texts = answer.texts
    if request.index is not None:
        if request.index >= len(texts):
            raise InvalidRequestError(f"index {request.index} is past the answer's {len(texts)} texts.", "index")
        texts = [texts[request.index]]
    return [FeedbackEntry(response_id=request.response_id, model_id=answer.model_id, text=text,
                          label=request.label) for text in texts]


def rating_entries(request: FeedbackRequest, answer: RememberedInput) -> list[FeedbackEntry]:
    """The rated chat answer; a 400 for a label."""
    if request.rating is None:
        raise InvalidRequestError("A chat completion takes a `rating` (-1, 0 or 1), not a `label`.", "label")
    if request.index is not None:
        raise InvalidRequestError("index is for classifications.", "index")
    return [FeedbackEntry(response_id=request.response_id, model_id=answer.model_id, messages=answer.messages,
                          output=answer.output, rating=request.rating)]
