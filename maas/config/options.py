"""The building blocks of the configs: the strict base model, the Serve options of a deployment
(replicas, autoscaling, resources, placement) and a generator's LoRA options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ModelName = str
Pooling = Literal["cls", "mean"]  # what a classifier head reads: the [CLS] state or the tokens' mean
EncoderDtype = Literal["auto", "float32", "bfloat16", "float16"]
PlacementStrategy = Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"]


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AutoscalingOptions(StrictModel):
    """Ray Serve autoscaling of one deployment's replicas."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas; 0 allows scale to zero.")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at deploy time.")
    target_ongoing_requests: float = Field(
        8, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(5.0, ge=0, description="Seconds of high load before upscaling.")
    downscale_delay_s: float = Field(30.0, ge=0, description="Seconds of low load before downscaling.")
    downscale_to_zero_delay_s: float | None = Field(
        None, ge=0,
        description="With `min_replicas: 0`: seconds without a request before the last replica "
        "stops (Serve's own setting); None: `downscale_delay_s`.",
    )
    metrics_interval_s: float = Field(2.0, gt=0, description="How often replicas report load.")
    look_back_period_s: float = Field(10.0, gt=0, description="Window over which load is averaged.")

    @model_validator(mode="after")
    def _check_bounds(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self

    def serve_config(self) -> dict[str, Any]:
        """Serve's ``autoscaling_config`` for these settings."""
        return self.model_dump(exclude_none=True)


LATENCY_POLICY = "maas.serving.latency_autoscaling:LatencyAutoscalingPolicy"
"""Import path of the latency-driven autoscaling policy (a string: the config imports no serving code)."""
LATENCY_FIELDS = ("target_ttft_p95_s", "target_queue_wait_s", "latency_downscale_ratio", "latency_min_samples")


class GeneratorAutoscalingOptions(AutoscalingOptions):
    """A generator's autoscaling: Serve's ongoing-requests rule, or with a latency target the
    latency-driven policy over the TTFT and queue wait its replicas measure (docs/cluster.md)."""

    target_ttft_p95_s: float | None = Field(
        None, gt=0,
        description="Latency policy: the p95 time to first token (seconds, as the replicas measure it "
        "over `look_back_period_s`) to keep under; above it the deployment scales up, well under it "
        "(`latency_downscale_ratio`) it may scale down. None with `target_queue_wait_s` None: the "
        "ongoing-requests rule alone.",
    )
    target_queue_wait_s: float | None = Field(
        None, gt=0,
        description="Latency policy: the longest a request may wait in a replica for its first token "
        "(the oldest waiting request's age: vLLM's queue plus prefill) before the deployment scales up.",
    )
    latency_downscale_ratio: float = Field(
        0.5, gt=0, lt=1,
        description="Latency policy: scale down one replica when every measured latency is under this "
        "share of its target and the ongoing-requests rule needs fewer replicas too.",
    )
    latency_min_samples: int = Field(
        5, ge=1,
        description="Latency policy: TTFTs in the window (all replicas) before the TTFT p95 counts; "
        "with fewer and no request waiting, the ongoing-requests rule decides.",
    )

    def latency_policy(self) -> bool:
        """Whether a latency target turns the latency-driven policy on."""
        return self.target_ttft_p95_s is not None or self.target_queue_wait_s is not None

    def serve_config(self) -> dict[str, Any]:
        config = self.model_dump(exclude_none=True, exclude=set(LATENCY_FIELDS))
        if self.latency_policy():
            config["policy"] = {"policy_function": LATENCY_POLICY, "policy_kwargs": {
                "target_ttft_p95_s": self.target_ttft_p95_s, "target_queue_wait_s": self.target_queue_wait_s,
                "downscale_ratio": self.latency_downscale_ratio, "min_samples": self.latency_min_samples}}
        return config


class DeploymentOptions(StrictModel):
    """Serve options of one deployment: replicas, resources, concurrency, health."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored with autoscaling).")
    autoscaling: AutoscalingOptions | None = Field(None, description="Autoscale the replicas.")
    num_cpus: float = Field(0.1, ge=0, description="Logical CPUs reserved per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved per replica.")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. 'A10G'.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests one replica runs at once.")
    max_queued_requests: int = Field(-1, ge=-1, description="Queued requests per caller; -1 = no cap.")
    health_check_period_s: float = Field(10.0, gt=0, description="Seconds between health checks.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="Health check timeout.")
    graceful_shutdown_timeout_s: float = Field(20.0, ge=0, description="Drain time on shutdown.")
    cold_start_timeout_s: float = Field(
        120.0, gt=0,
        description="With `autoscaling.min_replicas: 0` (scale to zero): how long a request that "
        "finds no replica running waits for the first one to start; past it the answer is a 503 "
        "`cold_start_timeout` with `Retry-After`, and the replica keeps starting. Unused otherwise.",
    )

    def scales_to_zero(self) -> bool:
        """Whether the deployment may run no replica at all (``autoscaling.min_replicas`` 0)."""
        return self.autoscaling is not None and self.autoscaling.min_replicas == 0

    def can_run_several(self) -> bool:
        """Whether the deployment may run more than one replica (fixed or autoscaled)."""
        return (self.autoscaling.max_replicas if self.autoscaling else self.num_replicas) > 1

    def to_serve_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Deployment.options`` for these settings."""
        actor_options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.accelerator_type:
            actor_options["accelerator_type"] = self.accelerator_type
        options: dict[str, Any] = {
            "ray_actor_options": actor_options,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.serve_config()
        else:
            options["num_replicas"] = self.num_replicas
        return options


class GeneratorDeploymentOptions(DeploymentOptions):
    """Serve options of a generator deployment: those of any deployment, and latency targets in
    its ``autoscaling``."""

    autoscaling: GeneratorAutoscalingOptions | None = Field(
        None, description="Autoscale the replicas (on ongoing requests, or on latency with a target).")


class PrefixRoutingOptions(StrictModel):
    """Cache-aware routing of one generator's requests across its replicas
    (:mod:`maas.serving.prefix_affinity`): a prompt goes to the replica that was sent its prefix
    (vLLM's prefix cache there holds it), or to its session's replica (`x-session-id`), unless
    that replica is overloaded. Matters with more than one replica."""

    enabled: bool = Field(
        False, description="Route by prompt prefix and session (Serve's request-router API); off: "
        "Serve's default power-of-two choice.",
    )
    sessions: bool = Field(
        True, description="Pin a request with an `x-session-id` header to its session's replica "
        "(rendezvous hashing over the live replicas).",
    )
    max_imbalance: int = Field(
        4, ge=0,
        description="Overloaded: a replica running more than this many requests above the least "
        "loaded one (or at its max_ongoing_requests) is passed over despite its cache.",
    )
    min_match_ratio: float = Field(
        0.1, ge=0, le=1, description="Least share of the prompt's tokens a replica must hold "
        "for its prefix to count; below it, Serve's default choice.",
    )
    block_tokens: int = Field(
        16, ge=1, le=1024, description="Tokens per hashed block of the prefix index (prefixes match "
        "block by block).",
    )
    max_blocks: int = Field(
        65536, ge=1, description="Blocks the index remembers per ingress replica (least recently "
        "used dropped first; about 340 bytes each).",
    )

    def router_kwargs(self) -> dict[str, Any]:
        """The request router's ``initialize_state`` arguments."""
        return self.model_dump(exclude={"enabled"})


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM accepts as ``max_lora_rank``."""


class LoraOptions(StrictModel):
    """LoRA adapters of one generator: vLLM's multi-LoRA serving (``enable_lora``) and which registry
    adapters it serves (``maas train lora-topic`` trains them; ``maas rollout`` switches versions)."""

    enabled: bool = Field(False, description="Start vLLM with LoRA support (`enable_lora`).")
    max_rank: int = Field(
        16, description="Highest adapter rank served (vLLM's `max_lora_rank`: 1, 8, 16, 32, 64, ...); "
        "`maas train` refuses to train a higher rank for this generator.",
    )
    max_loras: int = Field(2, ge=1, le=64, description="Adapters in one batch (vLLM's `max_loras`).")
    max_loaded_adapters: int = Field(
        4, ge=1, le=256,
        description="Adapters a replica keeps loaded (vLLM's `max_cpu_loras`, least recently used "
        "dropped first); at least `max_loras`.",
    )
    adapters: list[ModelName] = Field(
        default_factory=list,
        description="Registry names of the adapters served on this generator; clients name one in "
        "`model` (its live version) or pin `name/vN`. Needs `enabled`.",
    )

    @model_validator(mode="after")
    def _check(self) -> LoraOptions:
        if self.max_rank not in VLLM_LORA_RANKS:
            raise ValueError(f"max_rank {self.max_rank} is not one vLLM accepts: {list(VLLM_LORA_RANKS)}")
        if self.max_loaded_adapters < self.max_loras:
            raise ValueError("max_loaded_adapters must be at least max_loras")
        if self.adapters and not self.enabled:
            raise ValueError(f"adapters {self.adapters} need lora.enabled: true")
        if len(set(self.adapters)) != len(self.adapters):
            raise ValueError("adapter names must be unique")
        return self
