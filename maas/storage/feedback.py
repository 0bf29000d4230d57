"""Feedback on answers: the inputs of recent answers, and the labels (or ratings) clients send back.

Two stores, both on shared storage so that every ingress replica reads what another one wrote:

* :class:`RecentInputs` (``<batch_dir>/feedback_inputs/owners/<owner folder>/<response id>.json``):
  the input of each recent classify and chat answer, by its response id, in its owner's folder
  (the owner is an API key id; another key's id is simply absent). It is a cache, not an archive:
  one file per answer, written without fsync (a crash loses the newest, which only makes their
  feedback a 404). An owner keeps at most ``max_per_key`` answers and ``max_bytes_per_key`` bytes
  of them (the oldest go first), for ``retention_s`` seconds (an older file is absent when looked
  up). The caps and the retention are applied by a sweep of the owner's folder (one listing with
  ``stat``, under its lock), not on every add: each process keeps a running count and size per
  owner from its last sweep, and sweeps again only when an add would take them past a cap (then
  down to ``SWEEP_TO`` of the caps, so a key at its cap pays for one listing per tenth of the cap,
  not per add) or ``sweep_every_s`` after the last sweep (the expired ones, and what other
  replicas added: between sweeps an owner may hold more than the caps by what other ingress
  replicas added in that time).
* :class:`FeedbackLog` (one folder per model: ``<registry>/<name>/feedback/`` for a registry
  classifier, which is what ``maas train --with-feedback`` reads through :func:`load_feedback`;
  ``<batch_dir>/feedback/<model>/`` for any other model): one JSON-lines file per owner,
  ``<owner folder>.jsonl``, appended under the folder's lock, at most ``max_per_key`` entries per
  owner (one more is refused with :class:`FeedbackQuotaError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from maas.storage.files import (
    jsonl_lines,
    locked,
    owner_folder_name,
    read_json,
    safe_response_id,
)

FEEDBACK_FOLDER = "feedback"
SWEEP_EVERY_S = 60.0
"""A process sweeps an owner's remembered answers at least this often while it adds (retention,
and other replicas' adds)."""
SWEEP_TO = 0.9
"""A sweep over a cap deletes the oldest answers down to this share of the caps."""
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

AnswerKind = Literal["classify", "chat"]


class FeedbackQuotaError(Exception):
    """An owner already holds the most feedback entries it may for a model."""


class RememberedInput(BaseModel):
    """The input of one answer, kept so that feedback can name it by its response id."""

    kind: AnswerKind = Field(description="`classify` or `chat`.")
    model: str = Field(description="The model the request named (what its key was admitted for).")
    model_id: str = Field(description="What answered: a classifier's version (`sentiment/v2`) or the model.")
    texts: list[str] = Field(default_factory=list, description="A classification's input texts.")
    labels: list[str] = Field(default_factory=list, description="A classifier's labels, in its order.")
    messages: list[dict[str, str]] = Field(default_factory=list, description="A chat's messages (role, content).")
    output: str | None = Field(None, description="A whole chat answer's text (None for a stream).")


class FeedbackEntry(BaseModel):
    """One line of a :class:`FeedbackLog`: a labelled text, or a rated chat answer."""

    response_id: str
    model_id: str
    text: str | None = None
    label: str | None = None
    messages: list[dict[str, str]] = Field(default_factory=list)
    output: str | None = None
    rating: int | None = None
    created_at: str = ""


def model_folder_name(model: str) -> str:
    """A model's folder name: the name itself when it is a safe one, else a hash of it."""
    return model if _SAFE_NAME.match(model) else "model-" + hashlib.sha256(model.encode()).hexdigest()[:32]


@dataclass
class _Held:
    """An owner's answers as one process counts them: at its last sweep, plus its adds since."""

    count: int
    bytes: int
    swept_at: float


class RecentInputs:
    """The inputs of recent answers, by owner and response id; bounded per owner."""

    def __init__(self, root: str | Path, retention_s: float, max_per_key: int, max_bytes_per_key: int,
                 clock: Callable[[], float] = time.time, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.root = Path(root).expanduser() / "feedback_inputs" / "owners"
        self.retention_s, self.max_per_key, self.max_bytes_per_key = retention_s, max_per_key, max_bytes_per_key
        self.clock, self.sweep_every_s = clock, sweep_every_s
        self._held: dict[str, _Held] = {}  # per owner folder: count and bytes since this process's sweep

    def _folder(self, owner: str | None) -> Path:
        return self.root / owner_folder_name(owner)

    def add(self, response_id: str, record: RememberedInput, owner: str | None) -> None:
        """Keep ``record``; the owner's oldest (and expired) records go past the caps. A record
        larger than the byte cap on its own is not kept."""
        data = record.model_dump_json()
        size = len(data.encode())
        if size > self.max_bytes_per_key:
            return
        folder = self._folder(owner)
        path = folder / f"{safe_response_id(response_id)}.json"
        _write_quick(path, data)
        held, now = self._held.get(folder.name), self.clock()
        if held is not None and held.count < self.max_per_key and held.bytes + size <= self.max_bytes_per_key \
                and now - held.swept_at < self.sweep_every_s:
            held.count, held.bytes = held.count + 1, held.bytes + size
            return
        with locked(folder / ".lock"):
            self._held[folder.name] = self._sweep(folder, now)

    def get(self, response_id: str, owner: str | None) -> RememberedInput:
        """The owner's record of ``response_id``; ``KeyError`` when absent, expired or another owner's."""
        try:
            path = self._folder(owner) / f"{safe_response_id(response_id)}.json"
            if self.clock() - path.stat().st_mtime > self.retention_s:
                raise KeyError(response_id)
        except FileNotFoundError:
            raise KeyError(response_id) from None
        data = read_json(path)
        if not data:
            raise KeyError(response_id)
        return RememberedInput.model_validate(data)

    def held(self, owner: str | None) -> tuple[int, int]:
        """The owner's records and their bytes."""
        files = self._files(self._folder(owner))
        return len(files), sum(size for _, size, _ in files)

    def _sweep(self, folder: Path, now: float) -> _Held:
        """Delete the expired answers, and the oldest down to ``SWEEP_TO`` of the caps if over
        one; what is left."""
        files = sorted(self._files(folder), key=lambda f: f[2], reverse=True)  # newest first
        max_count, max_bytes = self.max_per_key, self.max_bytes_per_key
        if len(files) > max_count or sum(f[1] for f in files) > max_bytes:
            max_count, max_bytes = max(1, int(max_count * SWEEP_TO)), max(1, int(max_bytes * SWEEP_TO))
        count = size = 0
        for path, bytes_, mtime in files:
            if count + 1 > max_count or size + bytes_ > max_bytes or now - mtime > self.retention_s:
                path.unlink(missing_ok=True)
            else:
                count, size = count + 1, size + bytes_
        return _Held(count, size, now)

    @staticmethod
    def _files(folder: Path) -> list[tuple[Path, int, float]]:
        """``(path, bytes, mtime)`` of a folder's records (not the lock, nor a temporary file)."""
        found = []
        if not folder.is_dir():
            return found
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:
                        continue
                    found.append((Path(entry.path), stat.st_size, stat.st_mtime))
        return found


def _write_quick(path: Path, text: str) -> None:
    """Replace ``path`` atomically (a temporary file, then ``os.replace``), without fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class FeedbackLog:
    """The feedback of one model: a JSON-lines file per owner in ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, owner: str | None) -> Path:
        return self.folder / f"{owner_folder_name(owner)}.jsonl"

    def append(self, owner: str | None, entries: list[FeedbackEntry], max_per_key: int) -> int:
        """Append the owner's ``entries``; :class:`FeedbackQuotaError` when they would take it past
        ``max_per_key``. Returns how many entries the owner holds now."""
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        lines = "".join(e.model_copy(update={"created_at": stamp}).model_dump_json() + "\n" for e in entries)
        with locked(self.folder / ".lock"):
            held = self.count(owner)
            if held + len(entries) > max_per_key:
                raise FeedbackQuotaError(f"{held} of {max_per_key}")
            with open(self._path(owner), "a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        return held + len(entries)

    def count(self, owner: str | None) -> int:
        """How many entries the owner holds."""
        return len(_read_entries(self._path(owner)))

    def entries(self) -> list[list[FeedbackEntry]]:
        """Every owner's entries (a list per owner), each owner's in the order they came."""
        if not self.folder.is_dir():
            return []
        return [_read_entries(path) for path in sorted(self.folder.glob("*.jsonl"))]


def _read_entries(path: Path) -> list[FeedbackEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for line in jsonl_lines(text):
        if line.strip():
            try:
                entries.append(FeedbackEntry.model_validate(json.loads(line)))
            except ValueError:
                continue  # a line cut by a crash mid-append: skipped, the rest still count
    return entries


def classifier_feedback_folder(registry_root: str | Path, name: str) -> Path:
    """Where a registry classifier's feedback lives: ``<registry>/<name>/feedback/``."""
    return Path(registry_root) / name / FEEDBACK_FOLDER


def labelled_examples(groups: list[list[FeedbackEntry]]) -> list[tuple[str, str]]:
    """``(text, label)`` of labelled entries, one per text, from each owner's entries (a group):
    an owner's later label of a text replaces its earlier one; a text that two owners label
    differently is dropped."""
    labels_of: dict[str, set[str]] = {}
    for group in groups:
        latest = {entry.text: entry.label for entry in group if entry.text and entry.label}
        for text, label in latest.items():
            labels_of.setdefault(text, set()).add(label)  # type: ignore[arg-type]
    return sorted((text, next(iter(labels))) for text, labels in labels_of.items() if len(labels) == 1)


def load_feedback(registry: Any, name: str) -> list[tuple[str, str]]:
    """The labelled feedback of registry classifier ``name``: ``(text, label)`` pairs, one per text.

    ``registry``: a :class:`maas.storage.registry.ModelRegistry` or its root folder."""
    root = registry if isinstance(registry, str | Path) else registry.root
    return labelled_examples(FeedbackLog(classifier_feedback_folder(root, name)).entries())
