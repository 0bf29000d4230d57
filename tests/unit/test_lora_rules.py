"""LoRA adapters without Ray or vLLM: prompts, scoring, configs, rank refusal, adapter resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from maas.config import AppConfig, GeneratorModelConfig, LoraOptions
from maas.engines.lora import LoraIds, check_adapter, lora_engine_kwargs, read_adapter
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError, ModelNotReadyError
from maas.storage.registry import ModelRegistry, RegistryError
from maas.storage.served_adapters import ADAPTER_KIND, ServedAdapters, check_servable
from pipelines.training.lora import LoraTrainConfig, served_generator, train_adapter
from pipelines.training.lora_tasks import (
    answer_counts,
    build_messages,
    exact_match,
    generator_task,
    label_list,
    lenient_match,
    mentioned_label,
    normalize_answer,
)
from pipelines.training.lora_worker import IGNORE, batch_tensors, step_batches
from pipelines.training.training_data import DataError

GEN = "smollm2"


def app(max_rank: int = 8, adapters: tuple[str, ...] = ("topic-lora",), registry: Path | None = None) -> AppConfig:
    return AppConfig.model_validate({
        "generators": [{"name": GEN, "path": "/nowhere",
                        "lora": {"enabled": True, "max_rank": max_rank, "adapters": list(adapters)}}],
        "registry_dir": str(registry) if registry else None,
    })


def add_adapter(registry: ModelRegistry, name: str = "topic-lora", rank: int = 8, generator: str = GEN) -> str:
    with registry.new_version(name, {"kind": ADAPTER_KIND}) as (version, folder):
        (folder / "adapter_config.json").write_text(json.dumps(
            {"r": rank, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}))
        record = {"task": "lora-topic", "labels": ["a", "b"], "metrics": {"test_accuracy": 0.9},
                  "config": {"kind": ADAPTER_KIND, "generator": generator, "rank": rank}}
        (folder / "maas_training.json").write_text(json.dumps(record))
    return version


# ---------------------------------------------------------------- prompts and scoring


def test_prompt_asks_for_one_of_the_labels() -> None:
    task = generator_task("lora-topic")
    assert task.labels == ("business", "entertainment", "politics", "sports", "tech")
    messages = build_messages(task, "Shares fell.")
    assert messages == [{"role": "user", "content": "Shares fell.\n\nWhich topic is this news article about: "
                         "business, entertainment, politics, sports or tech? Answer with one word."}]
    assert label_list(["a"]) == "a" and label_list(["a", "b", "c"]) == "a, b or c"
    with pytest.raises(ValueError, match="unknown generator task"):
        generator_task("lora-nothing")


def test_prompt_ids_are_the_served_chat_ids_and_texts_are_truncated() -> None:
    from transformers import AutoTokenizer

    from maas.storage.embedded import prepare_smollm2
    from pipelines.training.lora_tasks import answer_ids, prompt_ids, truncate_text

    tokenizer = AutoTokenizer.from_pretrained(prepare_smollm2())
    text = truncate_text(tokenizer, "word " * 500, 16)
    assert len(tokenizer.encode(text, add_special_tokens=False)) <= 17
    messages = build_messages(generator_task("lora-topic"), text)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt_ids(tokenizer, messages) == tokenizer.encode(rendered, add_special_tokens=False)
    assert answer_ids(tokenizer, "tech")[-1] == tokenizer.eos_token_id


def test_exact_match_normalizes_case_space_and_punctuation() -> None:
    assert normalize_answer("  Sports.\nMore") == "sports" and normalize_answer("") == ""
    assert exact_match(["Tech", "business!", "politics is it", "sport"], ["tech", "business", "politics", "sports"]) == 0.75
    assert answer_counts(["Tech", "tech.", ""]) == {"tech": 2, "(empty)": 1}
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_lenient_reading_takes_the_first_label_named() -> None:
    labels = ["business", "sports", "tech"]
    assert mentioned_label("This article is about Sports, not business.", labels) == "sports"
    assert mentioned_label("This news article about", labels) is None
    assert lenient_match(["It is tech.", "Business!", "no idea"], ["tech", "sports", "sports"], labels) == pytest.approx(1 / 3)


def test_batches_mask_the_prompt_and_shard_by_rank() -> None:
    batch = batch_tensors([([5, 6, 7], [8, 2]), ([5], [9, 2])], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 2], [5, 9, 2, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE] * 3 + [8, 2], [IGNORE, 9, 2, IGNORE, IGNORE]]
    ranks = [step_batches(12, 3, 2, rank, seed=0, steps=2) for rank in (0, 1)]
    assert all(len(b) == 3 for r in ranks for b in r)
    seen = sorted(i for r in ranks for b in r for i in b)
    assert seen == list(range(12))  # one pass covers every example once, split between the ranks
    assert step_batches(3, 2, 1, 0, seed=0, steps=4) and len(step_batches(3, 2, 1, 0, seed=0, steps=4)) == 4


# ---------------------------------------------------------------- configs


def test_lora_options_are_validated() -> None:
    assert LoraOptions().enabled is False
    with pytest.raises(ValidationError, match="max_rank 12"):
        LoraOptions(enabled=True, max_rank=12)
    with pytest.raises(ValidationError, match="need lora.enabled"):
        LoraOptions(adapters=["a"])
    with pytest.raises(ValidationError, match="at least max_loras"):
        LoraOptions(enabled=True, max_loras=4, max_loaded_adapters=2)
    with pytest.raises(ValidationError, match="adapter names must differ"):
        app(adapters=(GEN,))


def test_engine_kwargs_follow_the_lora_options() -> None:
    plain = GeneratorModelConfig(name=GEN, path="/x")
    assert lora_engine_kwargs(plain) == {}
    config = app().generators[0]
    assert lora_engine_kwargs(config) == {"enable_lora": True, "max_loras": 2, "max_lora_rank": 8,
                                          "max_cpu_loras": 4}
    assert config.enforce_eager  # LoRA on the CPU keeps eager mode (the default)


def test_rank_over_the_served_maximum_is_refused_before_training() -> None:
    config = LoraTrainConfig(task="lora-topic", generator=GEN, rank=16)
    with pytest.raises(DataError, match="rank 16 is above the max_rank 8"):
        served_generator(config, app(max_rank=8))
    with pytest.raises(DataError, match="rank 16 is above"):  # refused before data, Ray or models load
        train_adapter(config, app(max_rank=8))
    with pytest.raises(DataError, match="serves no generator 'other'"):
        served_generator(LoraTrainConfig(task="lora-topic", generator="other"), app())
    assert served_generator(LoraTrainConfig(task="lora-topic", generator=GEN, rank=8), app()).name == GEN
    with pytest.raises(ValidationError, match="unknown generator task"):
        LoraTrainConfig(task="topic")
    assert LoraTrainConfig(task="lora-sentiment").registry_name() == "sentiment-lora"


# ---------------------------------------------------------------- serving side


def test_served_adapters_resolve_live_and_pinned_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    adapters = ServedAdapters(app().generators, registry)
    with pytest.raises(ModelNotReadyError):
        adapters.resolve("topic-lora")
    add_adapter(registry)
    add_adapter(registry)
    registry.set_live("topic-lora", "v1")
    assert adapters.resolve("topic-lora") == (GEN, "topic-lora/v1")
    assert adapters.resolve("topic-lora/v2") == (GEN, "topic-lora/v2")
    registry.set_live("topic-lora", "v2")
    assert adapters.resolve("topic-lora") == (GEN, "topic-lora/v2")
    for unknown in ("nothing", "topic-lora/v9", "topic-lora/latest"):
        with pytest.raises(ModelNotFoundError):
            adapters.resolve(unknown)
    assert adapters.location("topic-lora/v1") == tmp_path / "topic-lora" / "v1"


def test_adapter_checks_against_the_generator(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    add_adapter(registry, rank=16)
    info = read_adapter(tmp_path / "topic-lora" / "v1")
    assert (info.rank, info.target_modules) == (16, ["q_proj", "v_proj"])
    with pytest.raises(InvalidRequestError, match="rank 16, above the max_lora_rank 8"):
        check_adapter(app(max_rank=8).generators[0], info)
    check_adapter(app(max_rank=16).generators[0], info)
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        read_adapter(tmp_path)
    ids = LoraIds()
    assert (ids("a/v1"), ids("a/v2"), ids("a/v1")) == (1, 2, 1)


def test_rollout_check_refuses_an_unserved_base(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    add_adapter(registry, generator="elsewhere")
    add_adapter(registry, rank=16)
    add_adapter(registry)
    v1, v2, v3 = (registry.get("topic-lora", v) for v in ("v1", "v2", "v3"))
    with pytest.raises(RegistryError, match="adapts the generator 'elsewhere', which the Serve config does not serve"):
        check_servable(v1, app())
    with pytest.raises(RegistryError, match="rank 16, above the max_rank 8"):
        check_servable(v2, app())
    with pytest.raises(RegistryError, match="add 'topic-lora' to that generator's lora.adapters"):
        check_servable(v3, app(adapters=()))
    check_servable(v3, app())


def test_model_cards_name_the_parent(tmp_path: Path) -> None:
    from maas.endpoints.service.protocol import ModelCard
    from maas.storage.served_adapters import adapter_card_fields

    registry = ModelRegistry(tmp_path)
    adapters = ServedAdapters(app().generators, registry)
    card: Any = ModelCard(**adapter_card_fields(adapters, "topic-lora"))
    assert (card.parent, card.status, card.version) == (GEN, "not_trained", None)
    add_adapter(registry)
    registry.set_live("topic-lora", "v1")
    card = ModelCard(**adapter_card_fields(adapters, "topic-lora"))
    assert (card.parent, card.status, card.version, card.capability) == (GEN, "ready", "v1", "generate")
