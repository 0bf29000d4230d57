"""Files that several writers change at once lose no update: the registry's live pointer and the
API key file are read and replaced under their lock (:func:`maas.storage.files.locked`).

Each test widens the window between a writer's read and its write (a short sleep), so without
the lock the writers would interleave and overwrite each other."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maas.edge import key_file
from maas.edge.key_file import add_key, list_keys, revoke_key
from maas.storage import registry as registry_module
from maas.storage.registry import ModelRegistry
from tests.unit.test_registry import add_version

WRITERS = 6


def run_together(work: Callable[[int], Any], count: int = WRITERS) -> None:
    """Run ``work(i)`` for each i in its own thread, all released at once; re-raise a failure."""
    start, errors = threading.Barrier(count), []

    def worker(i: int) -> None:
        start.wait()
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors


def test_concurrent_rollouts_each_record_the_one_before(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    for _ in range(WRITERS + 1):
        add_version(registry, "m", ["a", "b"])
    registry.set_live("m", "v1")
    written: list[dict[str, Any]] = []
    real_get, real_write = ModelRegistry.get, registry_module.write_atomic

    def slow_get(self: ModelRegistry, name: str, version: str) -> Any:
        found = real_get(self, name, version)
        time.sleep(0.02)  # between reading the live version and writing the new one
        return found

    def recording_write(path: Path, text: str, mode: int | None = None) -> None:
        written.append(json.loads(text))
        real_write(path, text, mode)

    monkeypatch.setattr(ModelRegistry, "get", slow_get)
    monkeypatch.setattr(registry_module, "write_atomic", recording_write)
    run_together(lambda i: registry.set_live("m", f"v{i + 2}"))

    assert len(written) == WRITERS
    assert written[0]["previous"] == "v1"
    assert [r["previous"] for r in written[1:]] == [r["version"] for r in written[:-1]]
    assert registry.live_version("m") == written[-1]["version"]


@pytest.fixture
def slow_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the key file takes a while: concurrent writers would read the same old file."""
    real_read = key_file.read_key_file

    def slow_read(path: str | Path) -> Any:
        keys = real_read(path)
        time.sleep(0.02)
        return keys

    monkeypatch.setattr(key_file, "read_key_file", slow_read)


@pytest.mark.usefixtures("slow_key_file")
def test_concurrent_key_adds_and_revokes_all_land(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    for i in range(WRITERS):
        add_key(path, f"old-{i}")

    def change(i: int) -> None:
        add_key(path, f"new-{i}", admin=i % 2 == 0)
        revoke_key(path, f"old-{i}")

    run_together(change)

    keys = {k.id: k for k in list_keys(path)}
    assert sorted(keys) == sorted([f"old-{i}" for i in range(WRITERS)] + [f"new-{i}" for i in range(WRITERS)])
    assert all(keys[f"old-{i}"].revoked for i in range(WRITERS))
    assert [keys[f"new-{i}"].admin for i in range(WRITERS)] == [i % 2 == 0 for i in range(WRITERS)]
    assert len(capsys.readouterr().out.split()) == 2 * WRITERS  # one secret per added key
