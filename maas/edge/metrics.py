"""Service metrics, aggregated over every replica of every deployment.

Replicas record events into one small Ray actor (``maas-metrics``, no CPU reserved) with
fire-and-forget calls; the ingress renders the actor's registry as Prometheus text at
``GET /metrics``. One place holds every metric's definition.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

ACTOR_NAME = "maas-metrics"
ACTOR_NAMESPACE = "maas"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
SHADOW_LABELS = ("model", "live_version", "challenger_version")
CANARY_LABELS = ("model", "live_version", "canary_version")

# name -> (kind, help, label names, buckets)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...] | None]] = {
    "maas_requests": ("counter", "Requests served, by route, model and status.",
                      ("route", "model", "status"), None),
    "maas_request_errors": ("counter", "Requests answered with an error, by route and status.",
                            ("route", "status", "code"), None),
    "maas_request_latency_seconds": ("histogram", "End-to-end request latency.",
                                     ("route",), LATENCY_BUCKETS),
    "maas_prompt_tokens": ("counter", "Prompt (input) tokens processed.", ("model",), None),
    "maas_completion_tokens": ("counter", "Completion (output) tokens generated.", ("model",), None),
    "maas_prefix_cache_queries": ("counter", "Prompt tokens looked up in vLLM's prefix cache (generators "
                                  "with cache_stats).", ("model",), None),
    "maas_prefix_cache_hits": ("counter", "Prompt tokens found in vLLM's prefix cache (generators with "
                               "cache_stats).", ("model",), None),
    "maas_time_to_first_token_seconds": ("histogram", "Time to the first output token.",
                                         ("model",), LATENCY_BUCKETS),
    "maas_model_calls": ("counter", "Forward calls of batched engines.",
                         ("deployment", "model"), None),
    "maas_batch_size": ("histogram", "Inputs per forward call of batched engines.",
                        ("deployment", "model"), BATCH_BUCKETS),
    # shadow traffic (maas/serving/shadow.py): labels are served names and registry versions only
    "maas_shadow_requests": ("counter", "Classify requests also sent to a challenger version.",
                             SHADOW_LABELS, None),
    "maas_shadow_errors": ("counter", "Shadow calls the challenger failed.", SHADOW_LABELS, None),
    "maas_shadow_dropped": ("counter", "Sampled requests not shadowed: too many shadow calls running.",
                            SHADOW_LABELS, None),
    "maas_shadow_texts": ("counter", "Texts answered by both the live version and the challenger.",
                          SHADOW_LABELS, None),
    "maas_shadow_agreements": ("counter", "Shadowed texts whose top label the challenger agreed on.",
                               SHADOW_LABELS, None),
    "maas_shadow_confidence": ("histogram", "Top-label probability per shadowed text, by the version answering.",
                               (*SHADOW_LABELS, "answered_by"), CONFIDENCE_BUCKETS),
    "maas_shadow_latency_seconds": ("histogram", "Classify call latency of shadowed requests, by the version "
                                    "answering.", (*SHADOW_LABELS, "answered_by"), LATENCY_BUCKETS),
    # canaries (maas/serving/canary.py): the same kind of labels; answered_by is `live` or `canary`
    "maas_canary_requests": ("counter", "Classify requests of a model with a canary, by the version they were "
                             "sent to.", (*CANARY_LABELS, "answered_by"), None),
    "maas_canary_errors": ("counter", "Of those, the failed ones (a canary's were answered by the live version).",
                           (*CANARY_LABELS, "answered_by"), None),
    "maas_canary_latency_seconds": ("histogram", "Classify call latency of a model with a canary, by the "
                                    "version answering.", (*CANARY_LABELS, "answered_by"), LATENCY_BUCKETS),
    "maas_canary_decisions": ("counter", "Canary decisions taken by this service: rolled_back, promoted, held.",
                              (*CANARY_LABELS, "decision"), None),
}


class MetricsRegistry:
    """A Prometheus registry holding :data:`DEFINITIONS` (plain Python; the actor wraps it)."""

    def __init__(self) -> None:
        import prometheus_client as prom

        prom.disable_created_metrics()
        self.registry = prom.CollectorRegistry()
        self.metrics: dict[str, Any] = {}
        for name, (kind, doc, labels, buckets) in DEFINITIONS.items():
            if kind == "counter":
                metric = prom.Counter(name, doc, labels, registry=self.registry)
            else:
                metric = prom.Histogram(name, doc, labels, buckets=buckets, registry=self.registry)
            self.metrics[name] = metric

    def record(self, name: str, labels: dict[str, str], value: float = 1.0) -> None:
        """Add to a counter or observe into a histogram."""
        metric = self.metrics[name].labels(**labels)
        if DEFINITIONS[name][0] == "counter":
            metric.inc(value)
        else:
            metric.observe(value)

    def record_many(self, events: list[tuple[str, dict[str, str], float]]) -> None:
        for name, labels, value in events:
            self.record(name, labels, value)

    def render(self) -> str:
        import prometheus_client as prom

        return prom.generate_latest(self.registry).decode()


def metrics_actor() -> Any:
    """The shared metrics actor, created on first use, on the head node.

    Pinned to the head: a detached actor on a worker node would keep that node busy forever, and
    the autoscaler could never remove it. Never in the caller's placement group (a multi-device
    generator replica runs in one, and Serve makes its children inherit it).
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    head = {"node:__internal_head__": 0.001}
    actor_class = ray.remote(num_cpus=0, max_restarts=-1, resources=head)(MetricsRegistry)
    return actor_class.options(
        name=ACTOR_NAME, namespace=ACTOR_NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
    ).remote()


FLUSH_INTERVAL_S = 0.25
"""How long a replica's event loop buffers metric events before one call sends them all."""


class MetricsRecorder:
    """What replicas use: record events without waiting; failures never reach requests.

    On an event loop (the ingress's per-request events, the generator's), events are buffered
    and sent to the actor in one call at most every :data:`FLUSH_INTERVAL_S`: one Ray call per
    request was a measurable share of a request's CPU (benchmarks/overhead.py). From another
    thread (a batch running in an executor thread) they join the buffer of the event loop the
    recorder last ran on (one Ray call per batch was the metrics actor's main cost at low
    load); with no loop seen yet they are sent at once. ``render`` sends this replica's buffer
    first, so the ingress's own counts are never behind.
    """

    def __init__(self) -> None:
        self._actor: Any = None
        self._buffer: list[tuple[str, dict[str, str], float]] = []
        self._flush_scheduled = False
        self._loop: Any = None

    def bind_loop(self) -> None:
        """Remember the running event loop: events recorded later from other threads are
        buffered there (call from a coroutine of the replica)."""
        import asyncio

        self._loop = asyncio.get_running_loop()

    def record(self, name: str, labels: dict[str, str], value: float = 1.0) -> None:
        self.record_many([(name, labels, value)])

    def record_many(self, events: list[tuple[str, dict[str, str], float]]) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.record_many, events)
            else:
                self._send(events)
            return
        self._loop = loop
        self._buffer.extend(events)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Send the buffered events now (one call)."""
        self._flush_scheduled = False
        events, self._buffer = self._buffer, []
        if events:
            self._send(events)

    def _send(self, events: list[tuple[str, dict[str, str], float]]) -> None:
        try:
            if self._actor is None:
                self._actor = metrics_actor()
            self._actor.record_many.remote(events)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            logger.warning("could not record metrics", exc_info=True)
            self._actor = None

    async def render(self) -> str:
        self.flush()
        if self._actor is None:
            self._actor = metrics_actor()
        return await self._actor.render.remote()
