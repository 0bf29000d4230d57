"""Unit tests for maas.storage.embedded: path resolution and markers (no model conversion here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maas.storage import embedded as models
from maas.storage.embedded import ModelNotPreparedError, resolve_model_path


@pytest.fixture(autouse=True)
def maas_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MAAS_HOME at a fresh folder so no test sees the real cache."""
    home = tmp_path / "maas-home"
    monkeypatch.setenv("MAAS_HOME", str(home))
    return home


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}", encoding="utf-8")
    return path


def test_cache_dir_uses_maas_home_and_creates_it(maas_home: Path) -> None:
    assert not maas_home.exists()
    assert models.cache_dir() == maas_home
    assert maas_home.is_dir()


def test_cache_dir_defaults_to_home_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "maas"


def test_embedded_models_names() -> None:
    assert set(models.EMBEDDED_MODELS) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}


def test_resolve_local_path(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "my-model")
    assert resolve_model_path(str(folder)) == folder.resolve()


def test_resolve_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))


def test_resolve_folder_without_config_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_path(str(tmp_path / "empty"))


def test_registry_spec_resolves_to_the_live_version(tmp_path: Path) -> None:
    from maas.storage.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="no live version"):
        resolve_model_path("registry:sentiment", registry_dir=str(tmp_path))
    with registry.new_version("sentiment", {}) as (_, folder):
        (folder / "config.json").write_text("{}")
    registry.set_live("sentiment", "v1")
    assert resolve_model_path("registry:sentiment", registry_dir=str(tmp_path)) == tmp_path / "sentiment" / "v1"


def test_smollm2_without_prepare_raises() -> None:
    with pytest.raises(ModelNotPreparedError):
        resolve_model_path("embedded:smollm2-135m-instruct", prepare=False)


def test_unknown_embedded_model_raises() -> None:
    with pytest.raises(ValueError, match="Unknown embedded model"):
        resolve_model_path("embedded:gpt-9")


def test_minilm_path_has_config() -> None:
    path = models.minilm_path()
    assert (path / "config.json").is_file()
    assert resolve_model_path("embedded:all-minilm-l6-v2") == path


def test_smollm2_gguf_is_packaged() -> None:
    assert models.smollm2_gguf_path().stat().st_size > 0


def test_staged_folder_publishes_with_marker(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with models.staged_folder(dest, {"format_version": 1}) as tmp:
        (tmp / "config.json").write_text("{}", encoding="utf-8")
        assert not dest.exists()
    assert models.read_marker(dest)["format_version"] == 1
    assert (dest / "config.json").is_file()
    assert list(tmp_path.iterdir()) == [dest]


def test_staged_folder_interrupted_leaves_no_folder(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError), models.staged_folder(dest, {}) as tmp:
        (tmp / "config.json").write_text("{}", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_staged_folder_replaces_existing(tmp_path: Path) -> None:
    dest = _model_folder(tmp_path / "out")
    (dest / "stale.txt").write_text("old", encoding="utf-8")
    with models.staged_folder(dest, {}) as tmp:
        (tmp / "config.json").write_text("{}", encoding="utf-8")
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_prepare_smollm2_returns_current_folder_without_converting(
    maas_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _model_folder(maas_home / "models" / models.SMOLLM2)
    models.write_marker(folder, models._smollm2_info())
    monkeypatch.setattr(models, "_convert_smollm2", lambda *a: pytest.fail("converted"))
    assert models.prepare_smollm2() == folder
    assert resolve_model_path("embedded:smollm2-135m-instruct") == folder


def test_prepare_smollm2_force_rebuilds_atomically(
    maas_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _model_folder(maas_home / "models" / models.SMOLLM2)
    models.write_marker(folder, models._smollm2_info())
    (folder / "stale.txt").write_text("old", encoding="utf-8")
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}", encoding="utf-8")

    monkeypatch.setattr(models, "_convert_smollm2", fake_convert)
    assert models.prepare_smollm2(force=True) == folder
    assert len(calls) == 1 and calls[0] != folder
    assert not (folder / "stale.txt").exists()
    assert models._smollm2_is_current(folder)


def test_stale_marker_is_not_current(maas_home: Path) -> None:
    folder = _model_folder(maas_home / "models" / models.SMOLLM2)
    (folder / models.MARKER_FILE).write_text(json.dumps({"format_version": 0}), encoding="utf-8")
    assert not models._smollm2_is_current(folder)


def test_import_is_light() -> None:
    code = "import sys, maas.storage.embedded; print('torch' in sys.modules, 'transformers' in sys.modules)"
    root = Path(models.__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["False", "False"]


def test_remove_leftovers_keeps_the_folder(tmp_path: Path) -> None:
    dest = _model_folder(tmp_path / "m")
    (tmp_path / ".m.tmp-abc").mkdir()
    (tmp_path / ".m.old-1-2").mkdir()
    (tmp_path / ".other.tmp-abc").mkdir()
    models.remove_leftovers(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-abc", "m"]


def test_the_gguf_reader_draws_no_progress_bar_while_smollm2_converts(capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    list(bar(range(300), desc="Converting and de-quantizing GGUF tensors..."))
    assert "Converting" in capsys.readouterr().err  # what the newcomer's terminal showed
    with models.gguf_bar_off():
        list(gguf_utils.tqdm(range(300), desc="Converting and de-quantizing GGUF tensors..."))
    assert capsys.readouterr().err == ""
    assert gguf_utils.tqdm is bar
