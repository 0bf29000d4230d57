"""The configuration of a classifier fine-tuning run (:mod:`pipelines.training.train`), its result,
and the data splits it uses."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maas.config import Pooling
from maas.storage.registry import check_name
from pipelines.training.training_data import DEFAULT_FRACTIONS, DatasetSource, Example

HeadInit = Literal["random", "probe"]
TrainOn = Literal["windows", "texts"]


class TrainConfig(BaseModel):
    """Everything that defines a fine-tuning run; the defaults train the default sentiment model.

    The same config runs on 2 CPU workers here and on N GPU workers of a cluster: only
    ``num_workers``, ``cpus_per_worker``, ``use_gpu`` and the sizes change (``cluster/train-*.yaml``).
    The defaults bound the first run to a few minutes on 2 cores: 4,800 class-balanced training
    tweets, one epoch, 64 tokens, 1,000 validation and 1,000 test examples, and a time budget
    that stops training early (with a checkpoint) on a busy machine.
    """

    model_config = ConfigDict(extra="forbid")

    task: str = Field(
        description="Built-in task ('sentiment': tweets, 'topic': BBC News), or a name for `dataset`."
    )
    dataset: DatasetSource | None = Field(
        default=None, description="A CSV/JSONL file of labelled texts (instead of a built-in task)."
    )
    model_name: str | None = Field(
        default=None, description="Registry name of the trained model; None means the task name."
    )
    registry_dir: str | None = Field(
        default=None, description="Model registry folder; None means cache_dir()/registry."
    )
    rollout: bool | None = Field(
        default=None,
        description="Make the new version live: None = only if the model has no live version yet.",
    )
    promote_if_better: bool = Field(
        default=False,
        description="Make the new version live only if its validation macro-F1 beats the live "
        "version's (a challenger; the test split is never used to choose). Overrides `rollout`.",
    )
    fine_tune: bool = Field(
        default=True,
        description="False: stop after the linear probe (needs head_init 'probe'): the frozen "
        "encoder with a fitted head, the fastest honest first version of a model.",
    )
    with_feedback: bool = Field(
        default=False,
        description="Add the model's labelled feedback (`POST /v1/feedback`, stored in the registry) to "
        "the training split only; texts also in the validation or test split are left out, so the "
        "reported scores stay those of the fixed held-out data.",
    )
    allow_label_change: bool = Field(
        default=False, description="Allow labels that differ from the live version's."
    )
    base_model: str | None = Field(
        default=None,
        description="Hugging Face folder to fine-tune; None means the packaged all-MiniLM-L6-v2.",
    )
    output_dir: str | None = Field(
        default=None, description="Write the model folder here instead of into the registry."
    )
    storage_path: str | None = Field(
        default=None, description="Ray Train storage for checkpoints; None means cache_dir()/ray_train."
    )
    keep_checkpoints: bool = Field(
        default=False, description="Keep the run's Ray Train checkpoints after the model is written."
    )
    num_workers: int = Field(default=2, ge=1, le=256, description="Data-parallel Ray Train workers.")
    cpus_per_worker: float = Field(default=0.5, gt=0, le=256, description="Logical Ray CPUs per worker.")
    torch_threads: int | None = Field(
        default=None, ge=1, le=256, description="Torch threads per worker; None: max(1, floor(cpus_per_worker))."
    )
    use_gpu: bool = Field(default=False, description="Give each worker one GPU.")
    epochs: int = Field(default=1, ge=1, le=100, description="Passes over the training set.")
    batch_size: int = Field(
        default=32, ge=1, le=4096, description="Examples per worker and step; the global batch is x num_workers."
    )
    learning_rate: float = Field(default=1e-4, gt=0, lt=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the steps that warm the learning rate up linearly."
    )
    pooling: Pooling = Field(
        default="cls",
        description="What the classification head reads: 'cls', the first token's state "
        "(transformers' *ForSequenceClassification), or 'mean', the mean of all token states "
        "(how sentence encoders such as all-MiniLM-L6-v2 were trained to carry a text's meaning).",
    )
    head_init: HeadInit = Field(
        default="random",
        description="How the new classification head starts: 'random', or 'probe': first fitted "
        "as a logistic regression on the frozen encoder's features (C chosen on validation), "
        "then fine-tuned with the encoder (LP-FT; see pipelines/training/linear_probe.py).",
    )
    max_seq_len: int = Field(default=64, ge=8, le=512, description="Tokens the model reads at once.")
    max_windows: int = Field(
        default=1, ge=1, le=64,
        description="A longer text is read as up to this many consecutive windows of max_seq_len "
        "tokens (each trained with the text's label; their logits averaged when predicting). "
        "Serve the model with the same value. 1: cut the text at max_seq_len.",
    )
    train_on: TrainOn = Field(
        default="windows",
        description="'windows': every window of a text is a training example with the text's label; "
        "'texts': a text's windows' logits are averaged, as when predicting, and the loss is the "
        "text's (batch_size then counts texts). The same with max_windows 1.",
    )
    max_train_examples: int | None = Field(
        default=4800, ge=1, description="Cap on the training examples drawn from the train split; None: all."
    )
    balance_train: bool = Field(
        default=True,
        description="Draw capped training examples with equal label counts where the data allows "
        "(else keep the label proportions).",
    )
    max_eval_examples: int | None = Field(
        default=1000, ge=1, description="Cap on the validation and on the test examples (stratified); None: all."
    )
    split_fractions: tuple[float, float, float] = Field(
        default=DEFAULT_FRACTIONS, description="Train, validation and test fractions (positive, sum 1)."
    )
    time_budget_s: float | None = Field(
        default=240.0,
        gt=0,
        description="Budget of the training loop in seconds; when spent, training stops early with a checkpoint.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the split, sampling and training.")
    log_every_steps: int = Field(default=10, ge=1, description="A progress line every N steps.")
    max_failures: int = Field(
        default=1, ge=-1, description="Restarts of the worker group (from the last checkpoint); -1: unlimited."
    )

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in value) or abs(sum(value) - 1) > 1e-6:
            raise ValueError("split fractions must be positive and sum to 1")
        return value

    @field_validator("task", "model_name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @model_validator(mode="after")
    def _probe_only_needs_probe(self) -> TrainConfig:
        if not self.fine_tune and self.head_init != "probe":
            raise ValueError("fine_tune: false trains only a linear probe: set head_init: probe")
        return self

    def registry_name(self) -> str:
        return self.model_name or self.task


class TrainResult(BaseModel):
    """What a finished run produced: the model folder, its registry version and test metrics."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(description="The Hugging Face folder of the trained model.")
    model_ref: str | None = Field(default=None, description="Registry version, e.g. 'sentiment/v2'.")
    live: bool = Field(default=False, description="Whether this version is now the live one.")
    labels: list[str] = Field(description="Labels in class-id order.")
    metrics: dict[str, float] = Field(description="Test, baseline and training metrics.")
    data_hash: str = Field(description="sha256 of the task's examples (all splits).")
    wall_time_s: float = Field(description="Seconds from start to the written folder.")


class PreparedData(BaseModel):
    """The splits a run uses, after subsampling, plus their fingerprint."""

    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    data_hash: str
    feedback_examples: int = 0
    feedback_seen: int = 0
