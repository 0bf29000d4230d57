"""The labelled data behind the classifiers: loading, cleaning, splits, sampling and hashing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pipelines.training.training_data import (
    SENTIMENT_LABELS,
    Example,
    balanced_subsample,
    clean_tweet,
    data_hash,
    load_task,
    split_dataset,
    stratified_subsample,
    task_labels,
)

TOPIC_LABELS = ("business", "entertainment", "politics", "sports", "tech")


@pytest.fixture(scope="module")
def sentiment() -> list[Example]:
    return load_task("sentiment")


@pytest.fixture(scope="module")
def topic() -> list[Example]:
    return load_task("topic")


def test_sentiment_labels_and_clean_texts(sentiment: list[Example]) -> None:
    assert task_labels("sentiment") == SENTIMENT_LABELS == ("negative", "neutral", "positive")
    counts = Counter(label for _, label in sentiment)
    assert set(counts) == set(SENTIMENT_LABELS)
    assert 36_000 < len(sentiment) <= 38_158  # a few hundred duplicates/garbage rows dropped
    assert counts["negative"] > counts["neutral"] > counts["positive"] > 6_000
    assert all(text == text.strip() and text for text, _ in sentiment)
    assert not any(ch in text for text, _ in sentiment for ch in "\ufffd\u00e4\u00d5\u008a")
    assert len({text for text, _ in sentiment}) == len(sentiment)  # one label per text


def test_clean_tweet_repairs_apostrophes_and_drops_garbage() -> None:
    assert clean_tweet("I don\u00d5\u00a2_\u008a\u00ce_\u0086\u00a2t want it") == "I don't want it"
    assert clean_tweet("cars_\u00d1_.no thank you &amp; bye") == "cars .no thank you & bye"
    assert clean_tweet("  fun \u00e4\u00f3\u00ec@someone  ") == "fun @someone"


def test_topic_has_five_sorted_labels(topic: list[Example]) -> None:
    assert task_labels("topic") == TOPIC_LABELS
    assert len(topic) == 2225
    assert set(label for _, label in topic) == set(TOPIC_LABELS)
    assert all("\u00c2" not in text for text, _ in topic)  # decoded as UTF-8


def test_split_is_deterministic_and_order_independent(sentiment: list[Example]) -> None:
    shuffled = list(sentiment)
    random.Random(7).shuffle(shuffled)
    first, again = split_dataset(sentiment, seed=0), split_dataset(shuffled, seed=0)
    assert first == again
    assert split_dataset(sentiment, seed=1).test != first.test


def test_split_is_stratified_and_disjoint(sentiment: list[Example]) -> None:
    splits = split_dataset(sentiment, seed=0, fractions=(0.8, 0.1, 0.1))
    parts = (splits.train, splits.validation, splits.test)
    assert sum(map(len, parts)) == len(sentiment)
    assert len({text for part in parts for text, _ in part}) == len(sentiment)
    overall = Counter(label for _, label in sentiment)
    for part in parts:
        counts = Counter(label for _, label in part)
        for label, n in overall.items():
            assert abs(counts[label] / len(part) - n / len(sentiment)) < 0.005
    assert abs(len(splits.test) / len(sentiment) - 0.1) < 0.001


def test_split_rejects_bad_fractions(topic: list[Example]) -> None:
    with pytest.raises(ValueError):
        split_dataset(topic, fractions=(0.8, 0.3, 0.1))


def test_subsamples_keep_or_balance_labels(sentiment: list[Example]) -> None:
    train = split_dataset(sentiment, seed=0).train
    kept = stratified_subsample(train, 3000, seed=0)
    assert len(kept) == 3000 and kept == stratified_subsample(train, 3000, seed=0)
    share = Counter(label for _, label in kept)["positive"] / 3000
    assert abs(share - Counter(label for _, label in train)["positive"] / len(train)) < 0.005
    balanced = balanced_subsample(train, 3000, seed=0)
    assert Counter(label for _, label in balanced) == {label: 1000 for label in SENTIMENT_LABELS}
    assert balanced == balanced_subsample(list(reversed(train)), 3000, seed=0)
    assert stratified_subsample(train, None) == train and balanced_subsample(train, 10**9) == train


def test_balanced_subsample_gives_small_labels_share_to_others() -> None:
    examples = [(f"a{i}", "a") for i in range(10)] + [(f"b{i}", "b") for i in range(100)]
    counts = Counter(label for _, label in balanced_subsample(examples, 50, seed=0))
    assert counts == {"a": 10, "b": 40}


def test_data_hash_is_stable_and_order_independent(topic: list[Example]) -> None:
    tiny = [("good", "positive"), ("bad", "negative")]
    assert data_hash(tiny) == data_hash(list(reversed(tiny)))
    assert data_hash(tiny) == "19d9cef27945a5946e7e7864f99ea4be67ce6865324c30c1408650e3e0fd5aa8"
    assert data_hash([("good", "negative"), ("bad", "negative")]) != data_hash(tiny)
    assert data_hash(topic) == data_hash(load_task("topic"))


def test_rank_batches_shard_every_example_once_with_equal_step_counts() -> None:
    from pipelines.training.train_worker import rank_batches

    lengths = [random.Random(i).randint(3, 64) for i in range(1001)]
    per_rank = [rank_batches(lengths, 16, 2, rank, seed=0, epoch=0) for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 32  # ceil(1002 / 32)
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(seen) == 1002 and set(seen) == set(range(1001))  # one example repeated to even out
    padded = sum(max(lengths[i] for i in batch) for batch in per_rank[0]) / len(per_rank[0])
    assert padded < sum(lengths) / len(lengths) + 3  # length-grouped: little padding
    assert per_rank[0] == rank_batches(lengths, 16, 2, 0, seed=0, epoch=0)
    assert per_rank[0] != rank_batches(lengths, 16, 2, 0, seed=0, epoch=1)


def test_train_cli_builds_a_validated_config() -> None:
    from pipelines.training.train import TrainConfig, config_from_args

    config = config_from_args(
        [
            "topic",
            "--epochs",
            "2",
            "--max-train-examples",
            "none",
            "--no-balance-train",
            "--split-fractions",
            "0.7",
            "0.15",
            "0.15",
        ]
    )
    assert (config.task, config.epochs, config.max_train_examples) == ("topic", 2, None)
    assert config.balance_train is False and config.split_fractions == (0.7, 0.15, 0.15)
    assert TrainConfig(task="sentiment").max_seq_len == 64
    with pytest.raises(SystemExit):
        config_from_args(["sentiment", "--epochs", "0"])
    with pytest.raises(ValueError):
        TrainConfig(task="sentiment", unknown_field=1)


def test_cluster_training_configs_parse() -> None:
    """Every ``cluster/train-*.yaml`` is a valid TrainConfig (CPU here, GPU on a cluster)."""
    from pathlib import Path

    from pipelines.training.train import config_from_args

    files = sorted(Path("cluster").glob("train-*.yaml"))
    assert {f.name for f in files} >= {"train-sentiment.yaml", "train-topic.yaml", "train-gpu.yaml"}
    configs = {f.name: config_from_args(["x", "--config", str(f)]) for f in files}
    assert configs["train-gpu.yaml"].use_gpu and configs["train-gpu.yaml"].num_workers == 4
    assert not configs["train-sentiment.yaml"].use_gpu


def test_bad_datasets_get_clear_errors(tmp_path) -> None:  # noqa: ANN001
    from pipelines.training.training_data import DataError, DatasetSource, load_examples

    csv_file = tmp_path / "d.csv"
    csv_file.write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(6)))
    with pytest.raises(DataError, match="only one label"):
        load_examples("mine", DatasetSource(path=str(csv_file)))
    with pytest.raises(DataError, match="no column 'body'"):
        load_examples("mine", DatasetSource(path=str(csv_file), text_column="body"))
    with pytest.raises(DataError, match="Unknown task 'mine'"):
        load_examples("mine")
    with pytest.raises(DataError, match="not found"):
        load_examples("mine", DatasetSource(path=str(tmp_path / "missing.csv")))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(f'{{"text": "t{i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(12)))
    assert len(load_examples("mine", DatasetSource(path=str(jsonl)))) == 12
    jsonl.write_text('{"text": "x", "label": "a"}\nnot json\n')
    with pytest.raises(DataError, match="d.jsonl:2: not JSON"):
        load_examples("mine", DatasetSource(path=str(jsonl)))
