"""The classification methods of the ingress deployment (:class:`deployments.ingress.MaasIngress`
inherits them): ``/v1/classify`` over the classifier deployment's multiplexed model ids, the
classifiers' cards, shadow traffic to a challenger version (:mod:`maas.serving.shadow`) and a
canary answering a share of a model's requests (:mod:`maas.serving.canary`).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from ray.serve.handle import DeploymentHandle

from maas.config import AppConfig
from maas.edge.metrics import MetricsRecorder
from maas.endpoints.encoding.protocol import ClassifyRequest, ClassifyResponse
from maas.endpoints.encoding.rules import classify_response
from maas.endpoints.service.models import canary_summary, shadow_summary
from maas.endpoints.service.protocol import ModelCard, ModelChallenger, ModelTraining
from maas.protocol.errors import MaasError, ModelNotFoundError
from maas.serving.calls import result_of
from maas.serving.canary import CanaryKey, CanaryTraffic, PromotionEvidenceOf, judge
from maas.serving.coalesce import Coalescer, coalescing
from maas.serving.cold_start import ColdStarts
from maas.serving.feedback_scores import FeedbackScores
from maas.serving.shadow import Event, ShadowPair, ShadowTraffic, version_of
from maas.storage.canary_store import CanaryTally, Decision
from maas.storage.registry import ModelRegistry
from maas.storage.served_classifiers import ServedClassifiers
from maas.storage.shadow_stats import ShadowLog, ShadowTally


class ClassifierMethods:
    """The ingress's classification: :meth:`_setup_classifiers` from ``__init__``; it expects
    ``classifier`` (the deployment's handle, or None) and ``cold`` of :class:`deployments.ingress.MaasIngress`."""

    classifier: DeploymentHandle | None
    cold: ColdStarts  # scale to zero (maas/serving/cold_start.py)

    def _setup_classifiers(self, config: AppConfig) -> None:
        self.classifiers = ServedClassifiers(config.classifier.models, ModelRegistry(config.registry_dir))
        self.shadow_log = ShadowLog(self.classifiers.registry)
        self._classifier_handles: dict[str, DeploymentHandle] = {}
        # concurrent requests for one model become one call into its deployment (maas/serving/coalesce.py)
        self.classify_calls = Coalescer(self._call_classifier, **coalescing(config.classifier))
        self.recorder = MetricsRecorder()  # the HTTP app's, once built (one buffer per replica)
        self.shadow = ShadowTraffic(config.classifier.shadow, self.classifiers.challenger_id,
                                    self._call_classifier, self._record, self._persist_shadow)
        self.canary_config, self.promotion_config = config.classifier.canary, config.classifier.promotion
        # labelled feedback (POST /v1/feedback) for the promotion rule, scored by both versions
        self.feedback_scores = FeedbackScores(self.classifiers.registry, self.classify_calls.submit)
        self.canary = CanaryTraffic(self.canary_config, self.classifiers.canary_of, self.classify_calls.submit,
                                    self._record, self._persist_canary)

    async def classify(self, request: ClassifyRequest, owner: str | None = None,
                       remember: bool = False) -> ClassifyResponse:
        """Every label's probability for one or more texts (a drawn share answered by the model's
        canary, if it has one; a sampled share also goes to its challenger afterwards, if it has
        one: never delaying this answer); with ``remember``, the texts are kept for feedback by
        ``owner`` (:mod:`deployments.ingress_feedback`)."""
        model_id = self._classifier_model_id(request.model)
        texts = request.texts()
        await self.cold.ready("classifier", lambda: self.classifier.ping.remote(), request.model)  # type: ignore[union-attr]
        start = time.perf_counter()
        self.feedback_scores.bind_loop()
        model_id, results = await self.canary.answer(request.model, model_id, texts)
        self.shadow.after_answer(request.model, model_id, texts, results, time.perf_counter() - start)
        response = classify_response(model_id, results)
        if remember:
            await self._remember_classification(request.model, texts, response, owner)  # type: ignore[attr-defined]
        return response

    def _call_classifier(self, model_id: str, texts: list[str]) -> Any:
        return result_of(self._classifier_handle(model_id).classify.remote(model_id, texts))

    def _record(self, events: list[Event]) -> None:
        self.recorder.record_many(events)

    def _persist_shadow(self, pair: ShadowPair, tally: ShadowTally) -> None:
        registry_name = self.classifiers.registry_name(pair.model) or pair.model
        self.shadow_log.add(registry_name, pair.live_version, pair.challenger_version, tally)

    def _persist_canary(self, key: CanaryKey, tally: CanaryTally) -> Decision | None:
        name = self.classifiers.registry_name(key.model) or key.model
        evidence = PromotionEvidenceOf(self.classifiers.registry, name, partial(self.feedback_scores.accuracy, key.model))
        return self.classifiers.canaries.add(
            name, key.canary_version, tally, self.canary_config.latency_samples,
            lambda record: judge(self.canary_config, self.promotion_config, record, evidence))

    def _classifier_model_id(self, model: str) -> str:
        """The model id serving ``model`` now: its live registry version, or a pinned ``name/vN``."""
        if self.classifier is None:
            raise ModelNotFoundError.for_model(model, "classification", [])
        return self.classifiers.resolve(model)

    def _classifier_handle(self, model_id: str) -> DeploymentHandle:
        """The classifier handle routing to replicas that have ``model_id`` loaded."""
        handle = self._classifier_handles.get(model_id)
        if handle is None:
            handle = self.classifier.options(multiplexed_model_id=model_id)  # type: ignore[union-attr]
            self._classifier_handles[model_id] = handle
        return handle

    def _classifier_card(self, name: str, max_seq_len: int) -> ModelCard:
        """A classifier's card; a registry one says whether it is live, how its training stands,
        and its challenger with what shadow traffic found."""
        version = self._live_version(name)
        registry_name = self.classifiers.registry_name(name)
        run = self.classifiers.registry.training_status(registry_name) if registry_name else None
        training = ModelTraining.model_validate(run.model_dump()) if run else None
        status = "ready"
        if registry_name and version is None:
            status = {"training": "training", "failed": "failed"}.get(run.state if run else "", "not_trained")
        canary = canary_summary(self.classifiers.canaries.read(registry_name)) if registry_name else None
        return ModelCard(id=name, capability="classify", max_model_len=max_seq_len, version=version,
                         status=status, training=training, challenger=self._challenger(name, version),
                         canary=canary)

    def _challenger(self, name: str, live: str | None) -> ModelChallenger | None:
        challenger_id = self.classifiers.challenger_id(name) if live else None
        if challenger_id is None or live is None:
            return None
        challenger = version_of(challenger_id)
        record = self.shadow_log.get(self.classifiers.registry_name(name) or name, live, challenger)
        return ModelChallenger(version=challenger, shadow=shadow_summary(record) if record else None)

    def _live_version(self, name: str) -> str | None:
        """``vN`` of a registry-backed classifier, else None."""
        try:
            model_id = self.classifiers.resolve(name)
        except MaasError:
            return None
        return model_id.rpartition("/")[2] if model_id != name else None
