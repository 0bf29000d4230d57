"""maas installed as a wheel (``pip install .``, no checkout): the command runs and finds its
default configs, which ship as package data."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_serves_its_packaged_defaults(tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
        str(tmp_path / "dist"), str(ROOT), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("maas-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp_path)
    # the dependencies come from this environment's site-packages (not its editable maas)
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    (Path(site.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PYTHONPATH": ""}
    where = run(str(python), "-c", "import maas; print(maas.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(venv)), where
    assert "serve" in run(str(venv / "bin" / "maas"), "--help", cwd=tmp_path, env=env)
    help_text = run(str(venv / "bin" / "maas"), "serve", "--help", cwd=tmp_path, env=env)
    assert "--config" in help_text
    config = run(str(python), "-c", "from maas.cli import DEFAULT_CONFIG; from maas.config import "
                 "load_app_config; c = load_app_config(DEFAULT_CONFIG); print(DEFAULT_CONFIG, "
                 "[m.name for m in c.all_models()])", cwd=tmp_path, env=env)
    assert config.startswith(str(venv)) and "smollm2-135m-instruct" in config, config
    train = run(str(python), "-c", "from pipelines.training.background_training import train_config_file; "
                "print(train_config_file('topic').read_text())", cwd=tmp_path, env=env)
    assert "task: topic" in train
