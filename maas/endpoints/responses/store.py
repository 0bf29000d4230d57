"""Stored responses on disk (``<batch_dir>/responses``, shared storage on a cluster): every ingress
replica reads what any other one wrote, so a conversation continued by ``previous_response_id``
may land on any replica.

Layout: ``owners/<owner folder>/<response id>.json``, one file per response holding the response,
the input items of its request and the items before them (``context``: what a follow-up
continues). The owner folder is a hash of the owner (an API key id; ``none`` without keys): a
response is looked up in its owner's folder only, so another key's id is simply absent, and an
owner's count is a listing of one folder. Each file is written atomically (temporary file, then
rename): retention is checked from its modification time (its creation, or a background
response's last change), with no read. A new response is added under its owner folder's lock after
an ``admit(held, size)`` check that may refuse it: ``held`` (the owner's count and bytes) comes
from one listing with ``stat``, so the per-owner caps hold across threads and ingress replicas.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from maas.endpoints.batches.store import default_batch_dir
from maas.storage.files import (  # noqa: F401 - MAX_RESPONSE_ID_LENGTH: the routes' bound
    MAX_RESPONSE_ID_LENGTH,
    locked,
    owner_folder_name,
    read_json,
    safe_response_id,
    write_atomic,
)


class StoredResponse(BaseModel):
    """What is kept of one response: the response object (a dict, as answered), the input items
    of its request (ids given), and the items of the responses it continues."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]] = Field(default_factory=list)
    context: list[dict[str, Any]] = Field(default_factory=list)
    request: dict[str, Any] | None = Field(None, description="A background response's request, for its runner.")


class Held(NamedTuple):
    """What an owner stores: its responses and their bytes on disk."""

    count: int
    bytes: int


class ResponseStore:
    """Stored responses, by owner."""

    def __init__(self, root: str | Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.root = (Path(root).expanduser() if root else default_batch_dir()) / "responses"
        self.clock = clock

    def _folder(self, owner: str | None) -> Path:
        return self.root / "owners" / owner_folder_name(owner)

    def _path(self, response_id: str, owner: str | None) -> Path:
        return self._folder(owner) / f"{safe_response_id(response_id)}.json"

    def add(self, response_id: str, stored: StoredResponse, owner: str | None,
            admit: Callable[[Held, int], None] | None = None) -> None:
        """Store a new response; ``admit(held, size)``, called under the owner's lock with what it
        holds and the new response's bytes, may refuse it (e.g. its caps)."""
        path = self._path(response_id, owner)
        data = json.dumps(stored.model_dump(mode="json"))
        with locked(self._folder(owner) / ".lock"):
            if admit is not None:
                admit(self.held(owner), len(data.encode()))
            write_atomic(path, data)

    def get(self, response_id: str, owner: str | None, max_age_s: float | None = None) -> StoredResponse:
        """The owner's response; ``KeyError`` when it has none of this id (another owner's
        included). One older than ``max_age_s`` is deleted and absent."""
        path = self._path(response_id, owner)
        if max_age_s is not None and self._age(path) > max_age_s:
            path.unlink(missing_ok=True)
        data = read_json(path)
        if not data:
            raise KeyError(response_id)
        return StoredResponse.model_validate(data)

    def update(self, response_id: str, owner: str | None, change: Callable[[StoredResponse], None]) -> StoredResponse:
        """Apply ``change`` to the owner's stored response under its owner's lock; the changed one
        (``KeyError`` when there is none)."""
        with locked(self._folder(owner) / ".lock"):
            stored = self.get(response_id, owner)
            change(stored)
            write_atomic(self._path(response_id, owner), json.dumps(stored.model_dump(mode="json")))
            return stored

    def delete(self, response_id: str, owner: str | None) -> None:
        """Delete the owner's response; ``KeyError`` when it has none of this id."""
        path = self._path(response_id, owner)
        try:
            path.unlink()
        except FileNotFoundError:
            raise KeyError(response_id) from None

    def count(self, owner: str | None) -> int:
        """How many responses the owner holds (a listing, no reads)."""
        return self.held(owner).count

    def held(self, owner: str | None) -> Held:
        """The owner's responses and their bytes (one listing with ``stat``, no reads)."""
        count = size = 0
        folder = self._folder(owner)
        if not folder.is_dir():
            return Held(0, 0)
        with os.scandir(folder) as entries:
            for entry in entries:
                if not _is_response_file(entry.name):
                    continue
                try:
                    size += entry.stat().st_size
                except FileNotFoundError:  # deleted (or swept) meanwhile
                    continue
                count += 1
        return Held(count, size)

    def sweep(self, max_age_s: float, owner: str | None = None, every_owner: bool = False) -> int:
        """Delete the responses older than ``max_age_s``, of one owner or of all; how many went."""
        folders = [p for p in (self.root / "owners").glob("*") if p.is_dir()] if every_owner \
            else [self._folder(owner)]
        removed = 0
        for folder in folders:
            for path in self._files(folder):
                if self._age(path) > max_age_s:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _age(self, path: Path) -> float:
        try:
            return self.clock() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    @staticmethod
    def _files(folder: Path) -> Iterator[Path]:
        """The response files of a folder (not the lock, nor a temporary file being written)."""
        if not folder.is_dir():
            return iter(())
        return (p for p in folder.iterdir() if _is_response_file(p.name))


def _is_response_file(name: str) -> bool:
    """A response's file (not the lock, nor a temporary file being written)."""
    return name.endswith(".json") and not name.startswith(".")

