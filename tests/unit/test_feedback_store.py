"""The feedback stores (:mod:`maas.storage.feedback`): remembered answers are their owner's only,
bounded by count, bytes and age; feedback is appended per owner, bounded, and read back as
``(text, label)`` pairs for training."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from maas.storage.feedback import (
    FeedbackEntry,
    FeedbackLog,
    FeedbackQuotaError,
    RecentInputs,
    RememberedInput,
    classifier_feedback_folder,
    load_feedback,
)


def record(text: str = "hello") -> RememberedInput:
    return RememberedInput(kind="classify", model="sentiment", model_id="sentiment/v1", texts=[text],
                           labels=["negative", "positive"])


def test_a_remembered_answer_is_its_owner_s_only(tmp_path: Path) -> None:
    inputs = RecentInputs(tmp_path, retention_s=60, max_per_key=10, max_bytes_per_key=10_000)
    inputs.add("classify-1", record(), "alice")
    assert inputs.get("classify-1", "alice").texts == ["hello"]
    for owner, response_id in (("bob", "classify-1"), (None, "classify-1"), ("alice", "classify-2"),
                               ("alice", "../classify-1"), ("alice", "")):
        with pytest.raises(KeyError):
            inputs.get(response_id, owner)


def test_the_oldest_answers_go_past_the_count_and_byte_caps(tmp_path: Path) -> None:
    inputs = RecentInputs(tmp_path, retention_s=600, max_per_key=3, max_bytes_per_key=10_000,
                          clock=lambda: 1100.0, sweep_every_s=0)
    for i in range(5):
        inputs.add(f"classify-{i}", record(f"text {i}"), "alice")
        path = inputs._folder("alice") / f"classify-{i}.json"
        os.utime(path, (1000 + i, 1000 + i))  # a strict order by age, whatever the clock's grain
    assert inputs.held("alice")[0] == 3
    kept = [i for i in range(5) if _has(inputs, f"classify-{i}")]
    assert kept == [2, 3, 4]
    size = len(record("text 9").model_dump_json())
    small = RecentInputs(tmp_path / "small", retention_s=600, max_per_key=100, max_bytes_per_key=2 * size,
                         sweep_every_s=0)
    for i in range(4):
        small.add(f"classify-{i}", record(f"text {i}"), "alice")
    assert small.held("alice")[0] == 2 and small.held("alice")[1] <= 2 * size
    small.add("classify-big", record("x" * (3 * size)), "alice")  # larger than the cap alone: not kept
    assert not _has(small, "classify-big")


def test_an_answer_past_its_retention_is_gone(tmp_path: Path) -> None:
    inputs = RecentInputs(tmp_path, retention_s=60, max_per_key=10, max_bytes_per_key=10_000, sweep_every_s=0)
    inputs.add("classify-1", record(), "alice")
    old = time.time() - 61
    os.utime(inputs._folder("alice") / "classify-1.json", (old, old))
    with pytest.raises(KeyError):
        inputs.get("classify-1", "alice")
    inputs.add("classify-2", record(), "alice")  # an add sweeps the expired ones
    assert inputs.held("alice")[0] == 1


def test_an_owner_at_its_cap_is_swept_once_per_tenth_of_the_cap_not_per_add(tmp_path: Path) -> None:
    """The running count holds the cap between sweeps; a sweep over it deletes down to 90 %, so a
    key that keeps adding pays for one listing per tenth of the cap (not one per add)."""
    inputs = RecentInputs(tmp_path, retention_s=600, max_per_key=100, max_bytes_per_key=10_000_000)
    listings = []
    files = inputs._files
    inputs._files = lambda folder: listings.append(folder) or files(folder)  # type: ignore[method-assign]
    held = []
    for i in range(400):
        inputs.add(f"classify-{i}", record(f"text {i}"), "alice")
        held.append(len(files(inputs._folder("alice"))))
    assert max(held) <= 100 and min(held[100:]) >= 90
    assert len(listings) <= 1 + 300 // 10 + 1  # the first add, then one per 10 adds over the cap


def _has(inputs: RecentInputs, response_id: str) -> bool:
    try:
        inputs.get(response_id, "alice")
    except KeyError:
        return False
    return True


def entry(text: str, label: str) -> FeedbackEntry:
    return FeedbackEntry(response_id="classify-1", model_id="sentiment/v1", text=text, label=label)


def test_feedback_is_bounded_per_owner_and_read_back_for_training(tmp_path: Path) -> None:
    log = FeedbackLog(classifier_feedback_folder(tmp_path, "sentiment"))
    assert log.append("alice", [entry("good film", "positive"), entry("bad film", "negative")], 3) == 2
    with pytest.raises(FeedbackQuotaError):
        log.append("alice", [entry("x", "positive"), entry("y", "positive")], 3)
    assert log.append("alice", [entry("bad film", "positive")], 3) == 3  # a later label replaces its own
    assert log.append("bob", [entry("good film", "negative"), entry("fine", "neutral")], 3) == 2
    assert log.count("alice") == 3 and log.count(None) == 0
    # "good film": two keys disagree, dropped; "bad film": alice's later label
    assert load_feedback(tmp_path, "sentiment") == [("bad film", "positive"), ("fine", "neutral")]
    assert load_feedback(tmp_path, "topic") == []


def test_a_line_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path / "sentiment" / "feedback")
    log.append("alice", [entry("good film", "positive")], 10)
    with open(log._path("alice"), "a", encoding="utf-8") as handle:
        handle.write('{"response_id": "classify-2", "te')
    assert log.count("alice") == 1 and load_feedback(tmp_path, "sentiment") == [("good film", "positive")]
