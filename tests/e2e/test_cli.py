"""The `maas` command end to end: serve a config on a free port, call it, show status, stop.

The config holds a registry classifier with no version: `maas serve` answers at once and trains
it in the background (a tiny training config), printing a line per phase and nothing of Ray's.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


FIRST_RUN_MAX_LINES = 60
TRAINING_BOUND_S = 900
TINY_TRAINING = {"task": "sentiment", "epochs": 1, "batch_size": 16, "max_seq_len": 32,
                 "max_train_examples": 240, "max_eval_examples": 64, "fine_tune": False}
"""The probe only (no fine-tuned challenger): the challenger and its promotion by validation are
shown by tests/integration/test_first_hour.py; here the terminal of a first run is what counts."""


def _config(path: Path, port: int) -> None:
    """A small Serve config: the embedded encoder and an untrained registry classifier."""
    train_file = path.parent / "train-mood.yaml"
    train_file.write_text(yaml.safe_dump(TINY_TRAINING))
    path.write_text(yaml.safe_dump({
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "maas", "route_prefix": "/", "import_path": "pipelines.app:build_app",
            "args": {"encoder": {"models": [{"name": "minilm", "path": "embedded:all-minilm-l6-v2"}]},
                     "classifier": {"models": [{"name": "mood", "path": "registry:mood",
                                                "train_config": str(train_file)}]},
                     "registry_dir": str(path.parent / "registry")},
        }],
    }))


def _wait_for_line(process: subprocess.Popen, needle: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} in output:\n{''.join(lines)[-3000:]}")


def test_maas_serve_status_and_stop(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "serve.yaml"
    _config(config, port)
    maas = [sys.executable, "-m", "maas.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([*maas, "serve", "--config", str(config)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _wait_for_line(process, "Ray cluster at", 300)
        assert any(f"serving on http://127.0.0.1:{port}" in line for line in lines)
        address = lines[-1].split("Ray cluster at ")[1].split(":", 2)
        address = ":".join(address[:2])
        body = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings",
                          json={"model": "minilm", "input": "hello"}, timeout=60).json()
        assert len(body["data"][0]["embedding"]) == 384
        assert _classify(port).status_code == 503  # trained in the background meanwhile
        status = subprocess.run([*maas, "status", "--address", address, "--config", str(config)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr[-2000:]
        assert "encoder" in status.stdout and "RUNNING" in status.stdout
        assert "model mood" in status.stdout and "training:" in status.stdout, status.stdout
        for noise in ("PlacementGroupCleaner", "(pid=", "INFO"):  # the workers' output stays in Ray's logs
            assert noise not in status.stdout + status.stderr, status.stdout + status.stderr
        lines += _wait_for_line(process, "background training finished", TRAINING_BOUND_S)
        assert _classify(port).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0
    lines += process.stdout.readlines()
    _assert_readable(lines)


@pytest.mark.long
def test_a_stop_during_the_background_training_is_recorded(tmp_path: Path) -> None:
    """Ctrl-C while the classifier trains: the run is not left `training` in the registry (what
    `maas status` and /v1/models show), and no Ray is left behind to go on with it. A second
    service start (a minute and more on 2 cores): in ``make test-long``; the suite shows the rule
    in tests/unit/test_first_versions.py (``mark_unfinished``)."""
    from maas.storage.registry import ModelRegistry
    from pipelines.training.background_training import STOPPED_DETAIL

    config = tmp_path / "serve.yaml"
    _config(config, free_port())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "maas.cli", "serve", "--config", str(config)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_line(process, "in the background", 300)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=90)
    status = ModelRegistry(tmp_path / "registry").training_status("mood")
    assert status is not None and status.state == "failed" and status.detail == STOPPED_DETAIL, status


def _classify(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"model": "mood", "input": "great"},
                      timeout=60)


def _assert_readable(lines: list[str]) -> None:
    """A first run's terminal: a few dozen lines, each phase timed, none of Ray's own."""
    text = "".join(lines)
    assert len(lines) <= FIRST_RUN_MAX_LINES, text
    assert "mood: linear probe" in text and "mood/v1 is live: validation macro-F1" in text, text
    for noise in ("PlacementGroupCleaner", "Traceback", "(pid=", "INFO"):
        assert noise not in text, f"{noise!r} in the terminal:\n{text}"
