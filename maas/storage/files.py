"""Files that other processes read while they change: atomic writes, locks, JSON, and folders that
appear whole (with their marker) or not at all. Shared by the model cache (:mod:`maas.storage.embedded`),
the model registry (:mod:`maas.storage.registry`) and the API key file (:mod:`maas.edge.auth`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MARKER_FILE = "maas_prepared.json"


def cache_dir() -> Path:
    """The maas cache folder: ``$MAAS_HOME`` if set, else ``~/.cache/maas``; created on demand."""
    home = os.environ.get("MAAS_HOME")
    path = Path(home).expanduser() if home else Path.home() / ".cache" / "maas"
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a prepared folder, or None when the folder is not (fully) prepared."""
    try:
        data = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_prepared(folder: Path) -> bool:
    """Whether ``folder`` holds a readable marker file."""
    return read_marker(folder) is not None


def write_marker(folder: Path, info: dict[str, Any]) -> None:
    """Write the marker file into ``folder`` (``info`` plus a timestamp)."""
    data = {**info, "prepared_at": datetime.now(UTC).isoformat(timespec="seconds")}
    (folder / MARKER_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def staged_folder(dest: Path, info: dict[str, Any]) -> Iterator[Path]:
    """Yield an empty temp folder next to ``dest``; on success mark it and move it to ``dest``.

    The marker is written before the rename, so ``dest`` either is complete or is
    absent/old. On error the temp folder is removed and ``dest`` is left as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        write_marker(tmp, info)
        _apply_umask(tmp)
        _replace_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _apply_umask(folder: Path) -> None:
    """Give ``folder`` and its files the usual permissions (``mkdtemp`` makes it private)."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _replace_folder(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``, replacing an existing ``dest`` (each rename is atomic)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
        dest.rename(old)
    src.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(dest: Path) -> None:
    """Remove temp folders that killed runs of :func:`staged_folder` left next to ``dest``.

    Call it only while holding :func:`model_lock`, so no live run is staging.
    """
    for pattern in (f".{dest.name}.tmp-*", f".{dest.name}.old-*"):
        for path in dest.parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON-lines text, split on ``\n`` only: ``str.splitlines`` also splits at
    U+2028 and other separators that a JSON string may hold unescaped. A ``\r`` before it goes."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file, fsync, ``os.replace``):
    readers see the old file or the new one, never half of one. ``mode``: e.g. 0o600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


MAX_RESPONSE_ID_LENGTH = 128
"""The longest response id a request may name (ours are much shorter)."""


def owner_folder_name(owner: str | None) -> str:
    """The file or folder name of what an owner stores: a hash of its API key id (any text is a
    safe name); ``none`` without keys."""
    return "none" if owner is None else "key-" + hashlib.sha256(owner.encode()).hexdigest()[:32]


def safe_response_id(response_id: str) -> str:
    """``response_id`` if it can name a file (letters, digits, ``-`` and ``_``, as ours are);
    else ``KeyError``: no path outside a store can be named."""
    if not response_id or len(response_id) > MAX_RESPONSE_ID_LENGTH or \
            not all(c.isascii() and (c.isalnum() or c in "-_") for c in response_id):
        raise KeyError(response_id)
    return response_id
