"""maas/allocator.py: tcmalloc preloaded into the model replicas only when the library exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from maas.allocator import tcmalloc_path, with_tcmalloc


def test_preload_goes_into_the_replicas_runtime_env(tmp_path: Path) -> None:
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    options = {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 64}
    out = with_tcmalloc(options, str(lib))
    assert out["ray_actor_options"]["runtime_env"] == {"env_vars": {"LD_PRELOAD": str(lib)}}
    assert out["ray_actor_options"]["num_cpus"] == 0.5 and out["max_ongoing_requests"] == 64
    assert "runtime_env" not in options["ray_actor_options"]  # the caller's options are not changed


def test_an_existing_preload_is_kept_after_tcmalloc() -> None:
    options = {"ray_actor_options": {"runtime_env": {"env_vars": {"LD_PRELOAD": "/x.so", "A": "1"}}}}
    env = with_tcmalloc(with_tcmalloc(options, "/t.so"), "/t.so")["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env == {"LD_PRELOAD": "/t.so:/x.so", "A": "1"}


def test_no_library_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_TCMALLOC", "0")
    assert tcmalloc_path() is None
    options = {"ray_actor_options": {"num_cpus": 1}}
    assert with_tcmalloc(options) == options


def test_the_setting_names_a_library_only_if_it_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "libtcmalloc.so"
    monkeypatch.setenv("MAAS_TCMALLOC", str(lib))
    assert tcmalloc_path() is None
    lib.write_bytes(b"")
    assert tcmalloc_path() == str(lib)
