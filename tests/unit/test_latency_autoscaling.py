"""The latency-driven autoscaling policy (maas/serving/latency_autoscaling.py) on injected Serve
``AutoscalingContext`` objects, the replica-side FirstTokenWatch on a fake clock, and how the
config turns the policy on."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError
from ray.serve._private.common import TimeStampedValue
from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from maas.config import AppConfig, DeploymentOptions, GeneratorModelConfig
from maas.config.options import LATENCY_POLICY
from maas.serving.first_token_watch import FirstTokenWatch
from maas.serving.latency_autoscaling import (
    QUEUE_WAIT_KEY,
    RULE_KEY,
    TTFT_P95_KEY,
    TTFT_SAMPLES_KEY,
    WAITING_KEY,
    LatencyAutoscalingPolicy,
    LatencyTargets,
    decide,
    p95,
)

TARGETS = LatencyTargets(ttft_p95_s=0.5, queue_wait_s=2.0, downscale_ratio=0.5, min_samples=5)


def replica_metrics(per_replica: list[dict[str, float]], at: float = 100.0) -> dict[str, dict[str, Any]]:
    """Serve's ``raw_metrics``: each replica's series per key; the newest point is ``per_replica``'s
    value, an older point holds a different one (the policy must read the newest)."""
    raw: dict[str, dict[str, Any]] = {}
    for index, values in enumerate(per_replica):
        for key, value in values.items():
            raw.setdefault(key, {})[f"replica-{index}"] = [
                TimeStampedValue(at, value), TimeStampedValue(at - 5, value * 100 + 7)]
    return raw


def replica(ttft_p95: float = 0.0, samples: float = 0, queue_wait: float = 0.0, waiting: float = 0) -> dict:
    return {TTFT_P95_KEY: ttft_p95, TTFT_SAMPLES_KEY: samples, QUEUE_WAIT_KEY: queue_wait, WAITING_KEY: waiting}


def context(replicas: list[dict[str, float]], ongoing: float = 0, queued: float = 0, min_replicas: int = 1,
            max_replicas: int = 4, target: int | None = None, **config: Any) -> AutoscalingContext:
    """A real AutoscalingContext as Serve's controller builds it, with injected metrics."""
    scaling = AutoscalingConfig(min_replicas=min_replicas, max_replicas=max_replicas,
                                target_ongoing_requests=8, **config)
    running = [f"replica-{i}" for i in range(len(replicas))]
    return AutoscalingContext(
        deployment_id=None, deployment_name="generator-x", app_name="maas",
        current_num_replicas=len(replicas), target_num_replicas=len(replicas) if target is None else target,
        running_replicas=running, total_num_requests=ongoing, total_queued_requests=queued,
        aggregated_metrics={}, raw_metrics=lambda: replica_metrics(replicas),
        capacity_adjusted_min_replicas=min_replicas, capacity_adjusted_max_replicas=max_replicas,
        policy_state={}, last_scale_up_time=None, last_scale_down_time=None, current_time=100.0,
        config=scaling)


def test_high_ttft_scales_up_one_step_from_one_replica() -> None:
    decision = decide(context([replica(ttft_p95=2.0, samples=10)], ongoing=2), TARGETS)
    assert (decision.replicas, decision.rule) == (2, "latency_up")
    assert "ttft_p95 2.000s (target 0.5s, 10 samples)" in decision.reason


def test_scale_up_is_proportional_and_at_most_doubles() -> None:
    slightly = [replica(ttft_p95=0.6, samples=10)] * 3  # pressure 1.2: ceil(3.6) = 4
    assert decide(context(slightly, max_replicas=10), TARGETS).replicas == 4
    far = [replica(ttft_p95=50.0, samples=10)] * 3  # pressure 100: capped at 2n
    assert decide(context(far, max_replicas=10), TARGETS).replicas == 6


def test_the_worst_replica_counts() -> None:
    replicas = [replica(ttft_p95=0.1, samples=20), replica(ttft_p95=0.9, samples=3)]
    assert decide(context(replicas), TARGETS).rule == "latency_up"


def test_ttft_within_target_holds_even_when_ongoing_requests_would_scale_up() -> None:
    ctx = context([replica(ttft_p95=0.4, samples=10)], ongoing=40)  # the default rule asks for 5
    assert replica_queue_length_autoscaling_policy(ctx)[0] == 5
    decision = decide(ctx, TARGETS)
    assert (decision.replicas, decision.rule) == (1, "latency_hold")


def test_well_under_target_with_little_load_scales_down_one_replica() -> None:
    replicas = [replica(ttft_p95=0.1, samples=10)] * 3
    decision = decide(context(replicas, ongoing=4), TARGETS)
    assert (decision.replicas, decision.rule) == (2, "latency_down")


def test_well_under_target_but_load_too_high_for_fewer_replicas_holds() -> None:
    replicas = [replica(ttft_p95=0.1, samples=10)] * 3
    decision = decide(context(replicas, ongoing=17), TARGETS)  # 17 > 8 x 2 replicas
    assert (decision.replicas, decision.rule) == (3, "latency_hold")


def test_between_downscale_ratio_and_target_holds() -> None:
    replicas = [replica(ttft_p95=0.3, samples=10)] * 3  # 0.6 of the target
    assert decide(context(replicas, ongoing=1), TARGETS).replicas == 3


def test_replicas_still_starting_are_kept_while_latency_is_high_or_within_target() -> None:
    starting = dict(max_replicas=10, target=4)  # 1 running, 4 asked for: 3 start
    high = decide(context([replica(ttft_p95=2.0, samples=10)], **starting), TARGETS)
    assert (high.replicas, high.rule) == (4, "latency_up")
    within = decide(context([replica(ttft_p95=0.4, samples=10)], **starting), TARGETS)
    assert (within.replicas, within.rule) == (4, "latency_hold")


def test_bounds_are_kept() -> None:
    at_max = [replica(ttft_p95=5.0, samples=10)] * 2
    assert decide(context(at_max, max_replicas=2), TARGETS).replicas == 2
    at_min = [replica(ttft_p95=0.01, samples=10)] * 2
    assert decide(context(at_min, min_replicas=2), TARGETS).replicas == 2


def test_no_samples_falls_back_to_the_ongoing_requests_rule() -> None:
    for replicas in ([{}], [replica()], [replica(ttft_p95=9.0, samples=4)]):  # 4 < min_samples
        ctx = context(replicas, ongoing=20)
        decision = decide(ctx, LatencyTargets(ttft_p95_s=0.5))
        assert decision.rule == "ongoing_requests"
        assert decision.replicas == 2.5 == replica_queue_length_autoscaling_policy(ctx)[0]
    idle = decide(context([replica()] * 3, ongoing=0), LatencyTargets(ttft_p95_s=0.5))
    assert (idle.replicas, idle.rule) == (1, "ongoing_requests")  # the default rule, down to min


def test_queue_wait_scales_up_before_any_first_token() -> None:
    ctx = context([replica(queue_wait=5.0, waiting=3)])
    decision = decide(ctx, TARGETS)
    assert (decision.replicas, decision.rule) == (2, "latency_up")
    assert "queue_wait 5.000s (target 2.0s, 3 waiting)" in decision.reason


def test_requests_queued_at_handles_let_the_ongoing_rule_scale_up() -> None:
    ctx = context([replica(ttft_p95=0.4, samples=10)], ongoing=24, queued=8)
    decision = decide(ctx, TARGETS)
    assert (decision.replicas, decision.rule) == (3, "handle_queue")


def test_policy_keeps_its_rule_in_state_and_logs_only_changes(caplog: pytest.LogCaptureFixture) -> None:
    policy = LatencyAutoscalingPolicy(target_ttft_p95_s=0.5, min_samples=1)
    high = context([replica(ttft_p95=2.0, samples=10)])
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        replicas, state = policy(high)
        high.policy_state = state
        policy(high)
    assert (replicas, state[RULE_KEY]) == (2, "latency_up")
    lines = [r.getMessage() for r in caplog.records if "maas latency autoscaling" in r.getMessage()]
    assert lines == ["maas latency autoscaling of generator-x: rule latency_up -> 2 replicas (1 running): "
                     "ttft_p95 2.000s (target 0.5s, 10 samples): pressure 4.00"]


def test_policy_needs_a_target() -> None:
    with pytest.raises(ValueError, match="target_ttft_p95_s or target_queue_wait_s"):
        LatencyAutoscalingPolicy()


@pytest.mark.parametrize(("delay_s", "expected"), [(0.0, 2), (600.0, 1)])
def test_serve_applies_its_upscale_delay_to_the_policy(delay_s: float, expected: int) -> None:
    from ray.serve.autoscaling_policy import _apply_autoscaling_config  # what Serve's controller wraps it in

    wrapped = _apply_autoscaling_config(LatencyAutoscalingPolicy(target_ttft_p95_s=0.5))
    replicas, _ = wrapped(context([replica(ttft_p95=2.0, samples=10)], upscale_delay_s=delay_s))
    assert replicas == expected


def test_first_token_watch_measures_ttft_p95_and_queue_wait() -> None:
    now = [0.0]
    watch = FirstTokenWatch(window_s=10, clock=lambda: now[0])
    tickets = [watch.arrived() for _ in range(4)]
    now[0] = 1.0
    assert watch.first_token(tickets[0]) == 1.0
    watch.left(tickets[0])
    now[0] = 3.0
    watch.first_token(tickets[1])
    watch.left(tickets[2])  # failed before a first token: no sample, no longer waiting
    stats = watch.stats()
    assert stats == {TTFT_P95_KEY: 3.0, TTFT_SAMPLES_KEY: 2.0, QUEUE_WAIT_KEY: 3.0, WAITING_KEY: 1.0}
    now[0] = 12.0  # the first sample (at t=1) left the window
    assert watch.stats()[TTFT_SAMPLES_KEY] == 1.0
    watch.left(tickets[3])
    assert watch.stats()[QUEUE_WAIT_KEY] == 0.0


def test_p95_by_nearest_rank() -> None:
    assert p95([]) == 0.0
    assert p95([float(v) for v in range(1, 101)]) == 95.0
    assert p95([0.2, 0.1]) == 0.2


def generator(autoscaling: dict[str, Any] | None) -> GeneratorModelConfig:
    deployment = {"autoscaling": autoscaling} if autoscaling is not None else {}
    return GeneratorModelConfig.model_validate({"name": "g", "path": "embedded:x", "deployment": deployment})


def test_config_without_latency_targets_keeps_serves_default_policy() -> None:
    config = generator({"max_replicas": 2})
    serve_config = config.serve_options()["autoscaling_config"]
    assert "policy" not in serve_config and "target_ttft_p95_s" not in serve_config
    assert AutoscalingConfig(**serve_config).policy.is_default_policy_function()


def test_config_with_a_latency_target_sets_the_policy() -> None:
    config = generator({"max_replicas": 3, "target_ttft_p95_s": 1.5, "latency_min_samples": 2})
    serve_config = config.serve_options()["autoscaling_config"]
    policy = AutoscalingConfig(**serve_config).policy
    assert policy.policy_function == LATENCY_POLICY
    assert policy.policy_kwargs == {"target_ttft_p95_s": 1.5, "target_queue_wait_s": None,
                                    "downscale_ratio": 0.5, "min_samples": 2}
    assert policy.get_policy() is LatencyAutoscalingPolicy
    LatencyAutoscalingPolicy(**policy.policy_kwargs)


def test_latency_targets_are_for_generators_only() -> None:
    with pytest.raises(ValidationError, match="target_ttft_p95_s"):
        DeploymentOptions.model_validate({"autoscaling": {"target_ttft_p95_s": 1.0}})
    with pytest.raises(ValidationError, match="latency_downscale_ratio"):
        generator({"target_ttft_p95_s": 1.0, "latency_downscale_ratio": 1.5})
    AppConfig.model_validate({"generators": [{"name": "g", "path": "embedded:x", "deployment": {
        "autoscaling": {"max_replicas": 2, "target_queue_wait_s": 3}}}]})


def test_the_pickled_policy_runs_without_maas() -> None:
    """Serve pickles the policy by value into its controller: it must run where maas is not importable."""
    pickled = AutoscalingPolicy(policy_function=LATENCY_POLICY).get_serialized_policy_def()
    script = textwrap.dedent("""
        import sys, types
        sys.modules["maas"] = None  # any import of maas fails
        import cloudpickle
        from ray.serve.config import AutoscalingConfig
        cls = cloudpickle.loads(sys.stdin.buffer.read())
        point = types.SimpleNamespace(timestamp=1.0, value=2.0)
        many = types.SimpleNamespace(timestamp=1.0, value=10.0)
        ctx = types.SimpleNamespace(
            current_num_replicas=1, target_num_replicas=1, total_num_requests=1.0,
            total_queued_requests=0.0, capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=3,
            raw_metrics={"maas_ttft_p95_s": {"r": [point]}, "maas_ttft_samples": {"r": [many]}},
            policy_state={}, deployment_name="g", config=AutoscalingConfig(max_replicas=3))
        print(cls(target_ttft_p95_s=0.5)(ctx)[0])
    """)
    done = subprocess.run([sys.executable, "-c", script], input=pickled, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip().splitlines()[-1] == "2"
