"""Batch files and batch jobs on disk (``$MAAS_HOME/batches``, shared storage on a cluster).

Layout: ``files/<file id>.json`` (the file object and its owner) beside ``files/<file id>.jsonl``
(its content); ``jobs/<batch id>/batch.json`` (the batch object and its owner) and
``jobs/<batch id>/results.jsonl``, one line per finished request, appended as each one ends:
what a resumed run reads to skip the requests already done. Every JSON file is replaced
atomically; updates of a batch hold its lock. A new file or batch is added under its store's
lock (``.files.lock``, ``.jobs.lock``, beside the folders), after an ``admit`` check that may
refuse it: a per-key cap checked there holds across threads and ingress replicas (the check and
the addition are one step).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from maas.endpoints.batches.protocol import BatchObject, BatchOutputLine, FileObject
from maas.storage.files import cache_dir, locked, read_json, write_atomic


def default_batch_dir() -> Path:
    return cache_dir() / "batches"


def _safe_id(object_id: str) -> str:
    """An id usable as a file name (ids are ours: letters, digits, ``-`` and ``_``)."""
    if not object_id or not all(c.isalnum() or c in "-_" for c in object_id):
        raise KeyError(object_id)
    return object_id


class FileStore:
    """Uploaded batch inputs and produced outputs."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = (Path(root).expanduser() if root else default_batch_dir()) / "files"

    def create(self, content: bytes | Iterable[bytes], filename: str, purpose: str, owner: str | None,
               expires_at: int | None = None, admit: Callable[[int], None] | None = None) -> FileObject:
        """Store a file from its bytes, or from chunks written to disk as they come (never whole
        in memory). An error while the chunks are read (e.g. a size cap) leaves nothing behind.
        ``admit(size)``, called under the store's lock once the bytes are on disk, may refuse the
        file (e.g. its owner's storage quota): then nothing is kept either."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in [content] if isinstance(content, bytes) else content:
                    out.write(chunk)
                size = out.tell()
            file = FileObject(bytes=size, filename=filename, purpose=purpose,  # type: ignore[arg-type]
                              expires_at=expires_at)
            with locked(self.root.parent / ".files.lock"):
                if admit is not None:
                    admit(size)
                os.replace(tmp, self.root / f"{file.id}.jsonl")
                write_atomic(self.root / f"{file.id}.json",
                             json.dumps({**file.model_dump(mode="json"), "owner": owner}))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return file

    def get(self, file_id: str) -> tuple[FileObject, str | None]:
        """The file and its owner; ``KeyError`` when there is no such file."""
        data = read_json(self.root / f"{_safe_id(file_id)}.json")
        if not data:
            raise KeyError(file_id)
        owner = data.pop("owner", None)
        return FileObject.model_validate(data), owner

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        return (self.root / f"{file_id}.jsonl").read_bytes()

    def list(self) -> list[tuple[FileObject, str | None]]:
        """Every file with its owner, newest first."""
        found = [self._maybe(path.stem) for path in self.root.glob("*.json")] if self.root.exists() else []
        return sorted(filter(None, found), key=lambda item: item[0].created_at, reverse=True)

    def _maybe(self, file_id: str) -> tuple[FileObject, str | None] | None:
        try:
            return self.get(file_id)
        except KeyError:  # deleted since it was listed
            return None

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        for suffix in (".json", ".jsonl"):
            (self.root / f"{file_id}{suffix}").unlink(missing_ok=True)


class BatchStore:
    """Batch jobs: their state, and the results of the requests finished so far."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = (Path(root).expanduser() if root else default_batch_dir()) / "jobs"

    def _folder(self, batch_id: str) -> Path:
        return self.root / _safe_id(batch_id)

    def create(self, batch: BatchObject, owner: str | None,
               admit: Callable[[], None] | None = None) -> BatchObject:
        """Add a new batch; ``admit()``, called under the store's lock just before, may refuse it
        (e.g. its owner's open batches)."""
        with locked(self.root.parent / ".jobs.lock"):
            if admit is not None:
                admit()
            self._write(batch, owner)
        return batch

    def get(self, batch_id: str) -> tuple[BatchObject, str | None]:
        """The batch and its owner; ``KeyError`` when there is no such batch."""
        data = read_json(self._folder(batch_id) / "batch.json")
        if not data:
            raise KeyError(batch_id)
        owner = data.pop("owner", None)
        return BatchObject.model_validate(data), owner

    def list(self) -> list[tuple[BatchObject, str | None]]:
        """Every batch with its owner, newest first."""
        found = [self.get(p.name) for p in self.root.iterdir() if (p / "batch.json").exists()] \
            if self.root.exists() else []
        return sorted(found, key=lambda item: item[0].created_at, reverse=True)

    def update(self, batch_id: str, change: Callable[[BatchObject], None]) -> BatchObject:
        """Apply ``change`` to the stored batch under its lock; the changed batch."""
        with locked(self._folder(batch_id) / ".lock"):
            batch, owner = self.get(batch_id)
            change(batch)
            self._write(batch, owner)
            return batch

    def _write(self, batch: BatchObject, owner: str | None) -> None:
        write_atomic(self._folder(batch.id) / "batch.json",
                     json.dumps({**batch.model_dump(mode="json"), "owner": owner}))

    def append_result(self, batch_id: str, line: BatchOutputLine) -> None:
        """Record one finished request (a whole line per write, under the batch's lock)."""
        path = self._folder(batch_id) / "results.jsonl"
        with locked(self._folder(batch_id) / ".lock"), open(path, "ab") as out:
            torn = out.tell() > 0 and _last_byte(path) != b"\n"  # a crash mid-write before
            out.write((b"\n" if torn else b"") + line.model_dump_json().encode() + b"\n")

    def results(self, batch_id: str) -> Iterator[BatchOutputLine]:
        """The finished requests so far. A torn line (a crash mid-write, even inside a multi-byte
        character) is skipped: lines are split on ``\n`` bytes and each is decoded on its own."""
        path = self._folder(batch_id) / "results.jsonl"
        if not path.exists():
            return
        for raw in path.read_bytes().split(b"\n"):
            try:
                yield BatchOutputLine.model_validate_json(raw)
            except ValueError:  # pydantic's ValidationError (bad JSON, bad UTF-8) is a ValueError
                continue

    def counts(self, batch_id: str) -> tuple[int, int]:
        """``(completed, failed)`` of the requests finished so far, from the results (one per
        ``custom_id``): the batch's counts, whatever a crash left in ``batch.json``."""
        last = {line.custom_id: line.succeeded for line in self.results(batch_id)}
        completed = sum(last.values())
        return completed, len(last) - completed

    def done_ids(self, batch_id: str) -> dict[str, Any]:
        """``custom_id`` of each finished request: whether it failed."""
        return {line.custom_id: line.error is not None for line in self.results(batch_id)}


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)
