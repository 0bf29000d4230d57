"""LoRA adapters of a served generator, fine-tuned with Ray Train, into the model registry.

``maas train lora-topic`` (or ``python -m pipelines.training.lora lora-topic``) runs:

1. the driver reads the Serve config to find the generator to adapt (its model folder and its
   ``lora.max_rank``) and refuses, before anything trains, a rank above that maximum;
2. it loads the task's labelled data (:mod:`pipelines.training.lora_tasks`: a BBC article asked
   for its topic in one word), splits it as the classifiers' tasks are split, cuts each text to
   ``max_text_tokens`` tokens and builds the chat prompts' token ids with the base tokenizer;
3. a Ray Train ``TorchTrainer`` runs :func:`pipelines.training.lora_worker.lora_train_loop` on
   ``num_workers`` data-parallel workers (DDP over the adapter's matrices), with checkpoints;
   a lost worker restarts the group from the last checkpoint (``FailureConfig``);
4. the driver answers the test split greedily with the base model and with the adapter and scores
   both by exact match; the adapter is stored as the next registry version ``<name>/vN`` with
   its config (base generator, rank, target modules), metrics and data hash. The first version
   goes live; later ones with ``maas rollout`` (which checks that the base model is served).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from maas.config import AppConfig, GeneratorModelConfig, load_app_config
from maas.storage.embedded import resolve_model_path
from maas.storage.registry import TRAINING_FILE, ModelRegistry, check_name
from maas.storage.served_adapters import ADAPTER_KIND
from pipelines.training.lora_tasks import (
    GENERATOR_TASKS,
    GeneratorTask,
    answer_counts,
    answer_ids,
    build_messages,
    exact_match,
    generator_task,
    lenient_match,
    prompt_ids,
    truncate_text,
)
from pipelines.training.lora_worker import ADAPTER_DIR, lora_train_loop
from pipelines.training.runs import cli_main, ensure_ray, fit, fmt_s, silence_transformers
from pipelines.training.runs import log as _log
from pipelines.training.training_data import (
    DataError,
    Example,
    balanced_subsample,
    data_hash,
    label_counts,
    load_examples,
    split_dataset,
    stratified_subsample,
)

DEFAULT_GENERATOR = "smollm2-135m-instruct"
REPORT_FILE = "report.json"


class LoraTrainConfig(BaseModel):
    """Everything that defines a LoRA fine-tuning run; the defaults fit 2 cores in about 10 minutes."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description=f"Generator task: {', '.join(GENERATOR_TASKS)}.")
    model_name: str | None = Field(
        default=None, description="Registry name of the adapter; None: '<data task>-lora', e.g. topic-lora."
    )
    generator: str = Field(default=DEFAULT_GENERATOR, description="The served generator to adapt.")
    serve_config: str | None = Field(
        default=None, description="Serve config YAML that serves the generator; None: cluster/maas-cpu.yaml."
    )
    registry_dir: str | None = Field(default=None, description="Model registry; None: the Serve config's.")
    rollout: bool | None = Field(default=None, description="Make it live: None = only the first version.")
    storage_path: str | None = Field(default=None, description="Ray Train storage; None: cache_dir()/ray_train.")
    keep_checkpoints: bool = Field(default=False, description="Keep the run's checkpoints.")
    rank: int = Field(default=8, ge=1, le=512, description="LoRA rank r.")
    alpha: float = Field(default=16.0, gt=0, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1,
        description="Linear layers that get LoRA matrices.",
    )
    num_workers: int = Field(default=2, ge=1, le=256, description="Data-parallel Ray Train workers.")
    cpus_per_worker: float = Field(default=0.5, gt=0, le=256, description="Logical Ray CPUs per worker.")
    torch_threads: int | None = Field(default=None, ge=1, le=256, description="Torch threads per worker.")
    max_steps: int = Field(default=80, ge=1, le=100_000, description="Optimizer steps.")
    batch_size: int = Field(default=4, ge=1, le=1024, description="Examples per worker and step.")
    learning_rate: float = Field(default=1e-3, gt=0, lt=1, description="Peak AdamW learning rate.")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="Linear warm-up share of the steps.")
    max_text_tokens: int = Field(default=128, ge=8, le=2048, description="Tokens of each text in its prompt.")
    max_train_examples: int | None = Field(default=600, ge=1, description="Class-balanced training examples.")
    max_validation_examples: int | None = Field(default=100, ge=1, description="Validation examples (loss).")
    max_test_examples: int | None = Field(default=None, ge=1, description="Test examples; None: the whole split.")
    eval_batch_size: int = Field(default=16, ge=1, le=1024, description="Prompts per generate call when scoring.")
    max_answer_tokens: int = Field(default=4, ge=1, le=64, description="Greedy tokens of an answer when scoring.")
    lenient_answer_tokens: int = Field(
        default=24, ge=1, le=256, description="Greedy tokens of the base model's answer for the lenient score."
    )
    time_budget_s: float | None = Field(default=900.0, gt=0, description="Training loop budget (seconds).")
    checkpoint_every_steps: int = Field(default=50, ge=0, description="A checkpoint every N steps (0: at the end).")
    log_every_steps: int = Field(default=10, ge=1, description="A progress line every N steps.")
    max_failures: int = Field(default=1, ge=-1, description="Restarts of the worker group from a checkpoint.")
    seed: int = Field(default=0, ge=0, description="Seed of the split, sampling and training.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in GENERATOR_TASKS:
            raise ValueError(f"unknown generator task {value!r}; expected one of {GENERATOR_TASKS}")
        return value

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    def registry_name(self) -> str:
        return self.model_name or f"{generator_task(self.task).data_task}-lora"


class LoraResult(BaseModel):
    """What a finished run produced."""

    model_ref: str
    live: bool
    path: str
    metrics: dict[str, float]
    data_hash: str
    wall_time_s: float


class Prompted(BaseModel):
    """One example as the model sees it: prompt token ids, answer token ids, label, messages."""

    prompt: list[int]
    answer: list[int]
    label: str
    messages: list[dict[str, str]]


def served_generator(config: LoraTrainConfig, app: AppConfig) -> GeneratorModelConfig:
    """The generator the adapter is for; refuses (DataError) one the Serve config does not serve
    and a rank above its ``lora.max_rank`` — before any data is loaded or anything trains."""
    generators = {g.name: g for g in app.generators}
    if config.generator not in generators:
        raise DataError(f"The Serve config serves no generator '{config.generator}' "
                        f"(generators: {', '.join(generators) or 'none'}).")
    generator = generators[config.generator]
    if config.rank > generator.lora.max_rank:
        raise DataError(f"LoRA rank {config.rank} is above the max_rank {generator.lora.max_rank} that "
                        f"'{generator.name}' serves (its lora.max_lora_rank): train rank <= "
                        f"{generator.lora.max_rank}, or raise lora.max_rank in the Serve config.")
    return generator


def train_adapter(config: LoraTrainConfig, app: AppConfig | None = None) -> LoraResult:
    """Fine-tune a LoRA adapter of ``config.generator`` with Ray Train; store and return it.

    ``app``: the served application's config (default: read from ``config.serve_config``).
    Starts a local Ray (and shuts it down afterwards) only when none is initialized.
    """
    start = time.perf_counter()
    app = app or _load_app(config)
    generator = served_generator(config, app)
    registry = ModelRegistry(config.registry_dir or app.registry_dir)
    if config.registry_name() not in generator.lora.adapters or not generator.lora.enabled:
        _log(f"note: the Serve config does not serve '{config.registry_name()}' yet: add it to the "
             f"lora.adapters of '{generator.name}' (with lora.enabled: true) to serve it")
    base = resolve_model_path(generator.path)
    task = generator_task(config.task)
    tokenizer = _tokenizer(base)
    splits, digest = prepare_examples(config, task, tokenizer)
    started_ray = ensure_ray(config)
    try:
        result = _fit(config, splits, base, tokenizer.pad_token_id)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    with result.checkpoint.as_directory() as folder:
        adapter = Path(folder) / ADAPTER_DIR
        model = _load_adapter(base, adapter)
        scores = evaluate(config, model, tokenizer, splits["test"])
        training = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
        metrics = {**training, **scores.pop("metrics")}
        ref, live, path = _register(registry, config, generator, task, adapter, metrics, digest, splits, scores)
    if not config.keep_checkpoints:
        shutil.rmtree(result.path, ignore_errors=True)
    wall = time.perf_counter() - start
    _log(f"done in {fmt_s(wall)}: {ref}{' (live)' if live else ''}; test exact match: base "
         f"{metrics['base_test_accuracy']:.3f}, adapter {metrics['test_accuracy']:.3f}")
    return LoraResult(model_ref=ref, live=live, path=str(path), metrics=metrics, data_hash=digest,
                      wall_time_s=wall)


def prepare_examples(config: LoraTrainConfig, task: GeneratorTask, tokenizer: Any) -> tuple[dict[str, list[Prompted]], str]:
    """The task's train/validation/test splits as prompts, and the data's fingerprint."""
    examples = load_examples(task.data_task)
    splits = split_dataset(examples, seed=config.seed)
    chosen: dict[str, list[Example]] = {
        "train": balanced_subsample(splits.train, config.max_train_examples, config.seed),
        "validation": stratified_subsample(splits.validation, config.max_validation_examples, config.seed),
        "test": stratified_subsample(splits.test, config.max_test_examples, config.seed),
    }
    _log(f"task {config.task}: {len(examples)} examples; {len(chosen['train'])} train "
         f"{label_counts(chosen['train'])}, {len(chosen['validation'])} validation, {len(chosen['test'])} test; "
         f"texts cut to {config.max_text_tokens} tokens")
    return {split: [prompted(task, tokenizer, text, label, config.max_text_tokens) for text, label in part]
            for split, part in chosen.items()}, data_hash(examples)


def prompted(task: GeneratorTask, tokenizer: Any, text: str, label: str, max_text_tokens: int) -> Prompted:
    messages = build_messages(task, truncate_text(tokenizer, text, max_text_tokens))
    return Prompted(prompt=prompt_ids(tokenizer, messages), answer=answer_ids(tokenizer, label), label=label,
                    messages=messages)


def generate_answers(model: Any, tokenizer: Any, prompts: list[list[int]], batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers of a causal LM (transformers) to token-id prompts, left-padded in batches."""
    import torch

    answers: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, prompt in enumerate(chunk):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
    return answers


def evaluate(config: LoraTrainConfig, model: Any, tokenizer: Any, test: list[Prompted]) -> dict[str, Any]:
    """Exact-match accuracy of the base model and of the adapter on the test split."""
    prompts, labels = [p.prompt for p in test], [p.label for p in test]
    start = time.perf_counter()
    tuned = generate_answers(model, tokenizer, prompts, config.eval_batch_size, config.max_answer_tokens)
    with model.disable_adapter():
        base = generate_answers(model, tokenizer, prompts, config.eval_batch_size, config.max_answer_tokens)
        # Lenient too: the base model rarely answers in one word, so let it talk longer and take
        # the first label it names (else the comparison would only measure the answer format).
        long_base = generate_answers(model, tokenizer, prompts, config.eval_batch_size, config.lenient_answer_tokens)
    choices = sorted(set(labels) | set(config_labels(config)))
    metrics = {"test_accuracy": exact_match(tuned, labels), "base_test_accuracy": exact_match(base, labels),
               "test_lenient_accuracy": lenient_match(tuned, labels, choices),
               "base_test_lenient_accuracy": lenient_match(long_base, labels, choices),
               "test_examples": float(len(test))}
    _log(f"test exact match on {len(test)}: base {metrics['base_test_accuracy']:.3f}, adapter "
         f"{metrics['test_accuracy']:.3f}; first label named in {config.lenient_answer_tokens} tokens: base "
         f"{metrics['base_test_lenient_accuracy']:.3f}, adapter {metrics['test_lenient_accuracy']:.3f} "
         f"({fmt_s(time.perf_counter() - start)})")
    return {"metrics": metrics, "adapter_answers": answer_counts(tuned), "base_answers": answer_counts(base),
            "samples": [{"label": p.label, "base": b, "base_long": lb, "adapter": t}
                        for p, b, lb, t in zip(test[:10], base, long_base, tuned)]}


def config_labels(config: LoraTrainConfig) -> tuple[str, ...]:
    return generator_task(config.task).labels


def _register(registry: ModelRegistry, config: LoraTrainConfig, generator: GeneratorModelConfig,
              task: GeneratorTask, adapter: Path, metrics: dict[str, float], digest: str,
              splits: dict[str, list[Prompted]], scores: dict[str, Any]) -> tuple[str, bool, Path]:
    name = config.registry_name()
    record_config = {**config.model_dump(mode="json"), "kind": ADAPTER_KIND, "generator": generator.name,
                     "base_model_path": str(resolve_model_path(generator.path)),
                     "target_modules": sorted(config.target_modules)}
    created = datetime.now(UTC).isoformat(timespec="seconds")
    marker = {"kind": ADAPTER_KIND, "task": config.task, "generator": generator.name, "data_hash": digest}
    with registry.new_version(name, marker) as (version, folder):
        for item in adapter.iterdir():
            if item.is_file():
                shutil.copy2(item, folder / item.name)
        record = {"task": config.task, "labels": list(task.labels), "config": record_config,
                  "base_model": generator.name, "metrics": metrics, "data_hash": digest,
                  "examples": {split: len(items) for split, items in splits.items()},
                  "train_label_counts": label_counts([("", p.label) for p in splits["train"]]),
                  "created_at": created}
        (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (folder / REPORT_FILE).write_text(json.dumps({**record, **scores}, indent=2) + "\n", encoding="utf-8")
    live = registry.live_version(name) is None if config.rollout is None else config.rollout
    if live:
        registry.set_live(name, version)
    return f"{name}/{version}", live, registry.root / name / version


def _load_app(config: LoraTrainConfig) -> AppConfig:
    from maas.defaults import default_file

    return load_app_config(config.serve_config or default_file("maas-cpu.yaml"))


def _tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


def _load_adapter(base: Path, adapter: Path) -> Any:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    silence_transformers()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter)


def _fit(config: LoraTrainConfig, splits: dict[str, list[Prompted]], base: Path, pad_id: int) -> Any:
    """Run the TorchTrainer; return its ``ray.train.Result``."""
    loop = {**config.model_dump(mode="json"), "base_model_path": str(base), "pad_id": pad_id,
            "torch_threads": config.torch_threads or max(1, int(config.cpus_per_worker)),
            "train": [(p.prompt, p.answer) for p in splits["train"]],
            "validation": [(p.prompt, p.answer) for p in splits["validation"]]}
    return fit(config, lora_train_loop, loop, use_gpu=False,
               describe=f"Ray Train: {config.num_workers} workers x {config.cpus_per_worker} CPU, LoRA "
                        f"r={config.rank} on {','.join(config.target_modules)}, {config.max_steps} steps x "
                        f"{config.batch_size * config.num_workers} examples; ")


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The CLI: the task, ``--config YAML``, then one ``--option`` per :class:`LoraTrainConfig` field."""
    parser = argparse.ArgumentParser(prog="maas train", description="Fine-tune a LoRA adapter with Ray Train.")
    parser.add_argument("task", help=LoraTrainConfig.model_fields["task"].description)
    parser.add_argument("--config", default=None, help="YAML file of LoraTrainConfig fields.")
    for name, field in LoraTrainConfig.model_fields.items():
        if name == "task":
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool or bool in get_args(field.annotation):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif name == "target_modules":
            parser.add_argument(flag, dest=name, default=None, help="comma-separated module names")
        else:
            parser.add_argument(flag, dest=name, default=None, help=field.description)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> LoraTrainConfig:
    """``TASK [--field value ...]`` (and ``--config YAML``) into a :class:`LoraTrainConfig`."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config")
    if config_file:
        import yaml

        values = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    for key, value in args.items():
        if value is None:
            continue
        if key == "target_modules":
            value = [m.strip() for m in value.split(",") if m.strip()]
        values[key] = None if isinstance(value, str) and value.lower() in ("none", "null") else value
    try:
        return LoraTrainConfig.model_validate(values)
    except ValidationError as exc:
        parser.error(str(exc))
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.training.lora TASK [--option value ...]``: train, print the result as JSON."""
    return cli_main(config_from_args, train_adapter, argv)


if __name__ == "__main__":
    raise SystemExit(main())
