"""Latency-driven autoscaling of a generator: Serve's custom autoscaling policy over the time to
first token (TTFT) and queue wait that the generator's replicas measure themselves.

The problem: Serve's default policy scales on ongoing requests per replica. A vLLM replica batches
64 sequences at once, so the count of requests says little about what a client feels; TTFT does.

The mechanism (Serve's own API, no controller of ours):

* every generator replica answers ``record_autoscaling_stats()`` (Serve calls it every
  ``metrics_interval_s`` and pushes the values to its controller) with the keys below: the p95 of
  the TTFTs of the requests whose first token came within ``look_back_period_s``, how many there
  were, and the queue wait: how long the oldest request still without a first token has waited
  (vLLM's waiting queue plus its prefill, as the replica sees it);
* :class:`LatencyAutoscalingPolicy` is the deployment's ``autoscaling_config.policy``. Serve calls
  it on every control-loop tick with an ``AutoscalingContext`` and applies its own up/downscale
  delays, scaling factors and min/max bounds to the answer.

The rule, with ``n`` running replicas and ``pressure`` the largest measured/target ratio:

* pressure > 1: scale up to ``ceil(n * pressure)``, at least ``n + 1`` and at most ``2n`` (never
  below Serve's current target, which is above ``n`` while replicas start);
* pressure < ``downscale_ratio`` and the ongoing-requests rule would also need fewer than ``n``
  replicas (the load allows it): ``n - 1``;
* otherwise hold (``n``, or the current target while replicas start);
* no latency samples in the window (no request reached a first token, none is waiting): Serve's
  ongoing-requests rule, unchanged. Requests queued at Serve's handles (every replica at its
  ``max_ongoing_requests``) never reach a replica's measurements: then the ongoing-requests rule
  may always scale up.

This module imports nothing from maas on purpose: Serve pickles the policy class by value into its
controller, which must not need maas's other modules to run it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TTFT_P95_KEY = "maas_ttft_p95_s"
TTFT_SAMPLES_KEY = "maas_ttft_samples"
QUEUE_WAIT_KEY = "maas_queue_wait_s"
WAITING_KEY = "maas_waiting_first_token"
RULE_KEY = "maas_autoscaling_rule"
"""The policy-state key holding the rule of the last decision (``latency_up``, ``latency_hold``,
``latency_down``, ``handle_queue``, ``ongoing_requests``)."""

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class LatencyTargets:
    """What the policy aims for (None: that signal is not used)."""

    ttft_p95_s: float | None = None
    queue_wait_s: float | None = None
    downscale_ratio: float = 0.5
    min_samples: int = 5


@dataclass(frozen=True)
class LatencySignal:
    """The deployment's measurements, across its running replicas."""

    ttft_p95_s: float | None
    ttft_samples: int
    queue_wait_s: float
    waiting: int

    def has_samples(self) -> bool:
        return self.ttft_samples > 0 or self.waiting > 0


@dataclass(frozen=True)
class Decision:
    """Desired replicas (a fraction from the ongoing-requests rule: Serve rounds it up after its
    scaling factors), the rule that gave them and a one-line reason."""

    replicas: float
    rule: str
    reason: str


def latest(series: Any) -> float | None:
    """The newest value of a Serve time series (a list of ``TimeStampedValue``), or None."""
    if not series:
        return None
    return float(max(series, key=lambda point: point.timestamp).value)


def replica_values(raw_metrics: Mapping[str, Mapping[Any, Any]] | None, key: str) -> dict[Any, float]:
    """Each running replica's newest value of one custom metric."""
    values = {}
    for replica, series in ((raw_metrics or {}).get(key) or {}).items():
        value = latest(series)
        if value is not None:
            values[replica] = value
    return values


def read_signal(raw_metrics: Mapping[str, Mapping[Any, Any]] | None, min_samples: int) -> LatencySignal:
    """The deployment's signal: the worst replica's TTFT p95 (counted once the replicas together have
    ``min_samples`` TTFTs in the window), the longest queue wait, the samples and waiting requests."""
    samples = replica_values(raw_metrics, TTFT_SAMPLES_KEY)
    p95s = replica_values(raw_metrics, TTFT_P95_KEY)
    total = int(sum(samples.values()))
    measured = [p95s[r] for r, count in samples.items() if count > 0 and r in p95s]
    ttft = max(measured) if measured and total >= min_samples else None
    waits = replica_values(raw_metrics, QUEUE_WAIT_KEY).values()
    waiting = int(sum(replica_values(raw_metrics, WAITING_KEY).values()))
    return LatencySignal(ttft, total, max(waits, default=0.0), waiting)


def pressure(signal: LatencySignal, targets: LatencyTargets) -> float | None:
    """The largest measured/target ratio over the targets set; None with nothing to compare."""
    ratios = []
    if targets.ttft_p95_s is not None and signal.ttft_p95_s is not None:
        ratios.append(signal.ttft_p95_s / targets.ttft_p95_s)
    if targets.queue_wait_s is not None and signal.has_samples():
        ratios.append(signal.queue_wait_s / targets.queue_wait_s)
    return max(ratios) if ratios else None


def describe(signal: LatencySignal, targets: LatencyTargets) -> str:
    parts = []
    if targets.ttft_p95_s is not None:
        measured = "n/a" if signal.ttft_p95_s is None else f"{signal.ttft_p95_s:.3f}s"
        parts.append(f"ttft_p95 {measured} (target {targets.ttft_p95_s}s, {signal.ttft_samples} samples)")
    if targets.queue_wait_s is not None:
        parts.append(f"queue_wait {signal.queue_wait_s:.3f}s (target {targets.queue_wait_s}s, "
                     f"{signal.waiting} waiting)")
    return ", ".join(parts)


def ongoing_requests_replicas(ctx: Any) -> float:
    """What Serve's default rule (ongoing requests per replica) asks for."""
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

    desired, _ = replica_queue_length_autoscaling_policy(ctx)
    return float(desired)


def latency_rule(n: int, target: int, level: float, ongoing: float, targets: LatencyTargets) -> tuple[int, str]:
    """Replicas and rule from the pressure ``level`` with ``n`` running replicas and Serve's current
    ``target`` (above ``n`` while replicas start: up and hold keep it, so a decision is not undone
    while its replicas start)."""
    if level > 1:
        return max(target, min(max(n + 1, math.ceil(n * level)), 2 * n)), "latency_up"
    if level < targets.downscale_ratio and n > 1 and ongoing <= n - 1:
        return n - 1, "latency_down"
    return max(n, target), "latency_hold"


def decide(ctx: Any, targets: LatencyTargets) -> Decision:
    """The replicas the deployment should have, from an ``AutoscalingContext`` (bounded by its
    capacity-adjusted min and max replicas; Serve applies its delays afterwards)."""
    n = ctx.current_num_replicas
    ongoing = ongoing_requests_replicas(ctx)
    signal = read_signal(ctx.raw_metrics, targets.min_samples)
    level = pressure(signal, targets) if n > 0 else None
    replicas: float
    if level is None:
        replicas, rule = ongoing, "ongoing_requests"
        reason = f"no latency samples; {ctx.total_num_requests:g} ongoing requests"
    else:
        replicas, rule = latency_rule(n, ctx.target_num_replicas, level, ongoing, targets)
        reason = f"{describe(signal, targets)}: pressure {level:.2f}"
        if (ctx.total_queued_requests or 0) > 0 and ongoing > replicas:
            replicas, rule = ongoing, "handle_queue"
            reason += f"; {ctx.total_queued_requests:g} requests queued at handles"
    bounded = max(ctx.capacity_adjusted_min_replicas, min(ctx.capacity_adjusted_max_replicas, replicas))
    return Decision(bounded, rule, reason)


class LatencyAutoscalingPolicy:
    """Serve's class-based autoscaling policy (``AutoscalingPolicy(policy_function=...,
    policy_kwargs=...)``): Serve builds it once per deployment with ``policy_kwargs`` and calls it
    with an ``AutoscalingContext`` on every control-loop tick."""

    def __init__(self, target_ttft_p95_s: float | None = None, target_queue_wait_s: float | None = None,
                 downscale_ratio: float = 0.5, min_samples: int = 5) -> None:
        if target_ttft_p95_s is None and target_queue_wait_s is None:
            raise ValueError("the latency policy needs target_ttft_p95_s or target_queue_wait_s")
        self.targets = LatencyTargets(target_ttft_p95_s, target_queue_wait_s, downscale_ratio, min_samples)

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        decision = decide(ctx, self.targets)
        state = dict(ctx.policy_state or {})
        if state.get(RULE_KEY) != decision.rule:  # one log line per change of rule, not per tick
            logger.info("maas latency autoscaling of %s: rule %s -> %g replicas (%d running): %s",
                        ctx.deployment_name, decision.rule, decision.replicas, ctx.current_num_replicas,
                        decision.reason)
        state[RULE_KEY] = decision.rule
        return decision.replicas, state


def p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)])
