"""The feedback methods of the ingress deployment (:class:`deployments.ingress.MaasIngress` inherits
them): the input of each classify and chat completion answer remembered by its id, and
``/v1/feedback`` over them. The rules and the stores are in ``maas/endpoints/feedback/api.py`` and
:mod:`maas.storage.feedback`; both are on shared storage, so any replica takes the feedback.
"""

from __future__ import annotations

from typing import Any

from maas.config import AppConfig
from maas.endpoints.batches.store import default_batch_dir
from maas.endpoints.encoding.protocol import ClassifyResponse
from maas.endpoints.feedback.api import Feedback, FeedbackLimits
from maas.endpoints.feedback.protocol import FeedbackRequest, FeedbackResponse
from maas.protocol.chat import ChatCompletionRequest, ChatCompletionResponse
from maas.storage.feedback import RememberedInput
from maas.storage.registry import ModelRegistry


class FeedbackMethods:
    """The ingress's feedback: :meth:`_setup_feedback` from ``__init__``; it expects ``classifiers``
    (:class:`maas.storage.served_classifiers.ServedClassifiers`) and ``preparation`` (the pool
    that runs blocking work off the event loop)."""

    classifiers: Any
    preparation: Any

    def _setup_feedback(self, config: AppConfig) -> None:
        self.feedback_api = Feedback(config.batch_dir or default_batch_dir(), ModelRegistry(config.registry_dir).root,
                                     self._registry_classifier, FeedbackLimits.of(config.ingress))

    def _registry_classifier(self, model: str) -> str | None:
        return self.classifiers.registry_name(model) if model in self.classifiers.configs else None

    async def feedback(self, request: FeedbackRequest, owner: str | None = None) -> FeedbackResponse:
        """Store a label (classification) or rating (chat completion) for an answer of ``owner``."""
        return await self.preparation.run(self.feedback_api.give, request, owner)

    async def feedback_model(self, request: FeedbackRequest, owner: str | None) -> str:
        """The model the named answer came from (what the key must be allowed); a 404 if unknown."""
        answer = await self.preparation.run(self.feedback_api.answer_of, request.response_id, owner)
        return answer.model

    async def _remember_classification(self, model: str, texts: list[str], response: ClassifyResponse,
                                       owner: str | None) -> None:
        labels = response.data[0].labels if response.data else []
        record = RememberedInput(kind="classify", model=model, model_id=response.model, texts=texts, labels=labels)
        await self._remember(response.id, record, owner)

    async def _remember_chat(self, request: ChatCompletionRequest, response_id: str, model_id: str,
                             owner: str | None, response: ChatCompletionResponse | None = None) -> None:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        output = response.choices[0].message.content if response is not None and response.choices else None
        record = RememberedInput(kind="chat", model=request.model, model_id=model_id, messages=messages,
                                 output=output if isinstance(output, str) else None)
        await self._remember(response_id, record, owner)

    async def _remember(self, response_id: str, record: RememberedInput, owner: str | None) -> None:
        if self.feedback_api.enabled:
            await self.preparation.run(self.feedback_api.remember, response_id, record, owner)
