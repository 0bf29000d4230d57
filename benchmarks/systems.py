"""Start and stop each system under test, one at a time, each in its own process group.

A system is a command line (:class:`SystemSpec`). :class:`RunningSystem` starts it on a free
127.0.0.1 port in a new session, waits until a real request succeeds, and on exit stops it:
SIGTERM to the server (the Ray-based ones then shut their private Ray down), then SIGTERM and
SIGKILL to its whole process group, then any process still naming its private Ray folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from benchmarks.settings import (
    CLASSIFIER_MODEL,
    MAAS_VARIANTS,
    SERVE_STOCK_SUFFIX,
    SERVED_MODEL,
    EngineSettings,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BASE_ENV = {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token", "TOKENIZERS_PARALLELISM": "false",
            "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            # Ray starts its workers (and so the vLLM engines inside them) at nice 15; on a
            # shared machine that alone would slow the Ray-based systems. Run all at nice 0.
            "RAY_worker_niceness": "0"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SystemSpec:
    """How to start one system and how to tell that it answers."""

    name: str
    argv: list[str]
    port: int
    probe_path: str
    probe_body: dict[str, object]
    env: dict[str, str] = field(default_factory=dict)
    ray_temp_dir: str | None = None
    probe_headers: dict[str, str] = field(default_factory=dict)
    """Headers of the readiness probe (a key, when the system requires one)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command_line(self) -> str:
        """The command as one shell-quoted line (for the results file)."""
        import shlex

        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.argv)}".strip()


def _ray_temp_dir() -> str:
    # Ray's socket paths must stay short: a private folder directly under /tmp.
    return tempfile.mkdtemp(prefix="rb", dir="/tmp")


def generation_spec(system: str, model_dir: Path, engine: EngineSettings) -> SystemSpec:
    """The command of a generation system: maas, vllm, rayllm or naive."""
    port = free_port()
    probe = {"model": SERVED_MODEL, "prompt": "Hello", "max_tokens": 2}
    env = {**BASE_ENV, **engine.env()}
    if system in ("vllm", "vllm-tcmalloc"):
        if system == "vllm-tcmalloc":
            from maas.allocator import tcmalloc_path

            env["LD_PRELOAD"] = tcmalloc_path() or ""
        argv = [PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                "--served-model-name", SERVED_MODEL, "--dtype", engine.dtype,
                "--max-model-len", str(engine.max_model_len), "--max-num-seqs", str(engine.max_num_seqs),
                "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--enforce-eager"] if engine.enforce_eager else []
        return SystemSpec(system, argv, port, "/v1/completions", probe, env)
    if system == "naive":
        argv = [PYTHON, "-m", "benchmarks.naive_server", "--port", str(port),
                "--generator", str(model_dir), "--served-model-name", SERVED_MODEL,
                "--dtype", engine.dtype]
        return SystemSpec(system, argv, port, "/v1/completions", probe, env)
    ray_dir = _ray_temp_dir()
    kind = "rayllm" if system == "rayllm" else "maas-generate"
    argv = [PYTHON, "-m", "benchmarks.ray_apps", kind, "--port", str(port),
            "--model-dir", str(model_dir), "--ray-temp-dir", ray_dir]
    argv += MAAS_VARIANTS.get(system, [])
    env.update(maas_serve_env(system))
    if system == "maas-no-tcmalloc":
        env["MAAS_TCMALLOC"] = "0"
    return SystemSpec(system, argv, port, "/v1/completions", probe, env, ray_dir)


def classify_spec(variant: str, model_dir: Path, max_batch_size: int) -> SystemSpec:
    """The command of a classification variant: maas-batched, maas-unbatched or naive."""
    port = free_port()
    probe = {"model": CLASSIFIER_MODEL, "input": "Hello there"}
    env = dict(BASE_ENV)
    if variant == "naive":
        argv = [PYTHON, "-m", "benchmarks.naive_server", "--port", str(port),
                "--classifier", str(model_dir), "--served-model-name", CLASSIFIER_MODEL]
        return SystemSpec(variant, argv, port, "/v1/classify", probe, env)
    ray_dir = _ray_temp_dir()
    batch = 1 if variant.startswith("maas-unbatched") else max_batch_size
    argv = [PYTHON, "-m", "benchmarks.ray_apps", "maas-classify", "--port", str(port),
            "--model-dir", str(model_dir), "--max-batch-size", str(batch), "--ray-temp-dir", ray_dir]
    argv += ["--quantize", "int8"] if variant.endswith("-int8") else []
    argv += ["--batch-wait-s", "0"] if variant.endswith("-nowait") else []
    argv += ["--batch-wait-s", "0.01"] if variant.endswith("-wait10ms") else []
    argv += variant_overrides(variant)
    env.update(maas_serve_env(variant))
    return SystemSpec(variant, argv, port, "/v1/classify", probe, env, ray_dir)


def variant_overrides(variant: str) -> list[str]:
    """Flags of a classify variant's ``-t<N>`` (torch threads), ``-l<N>`` (torch threads of a
    lone request: ``-l1`` turns the low-load threads off) and ``-r<N>`` (replicas) parts, e.g.
    ``maas-batched-t2-r2``; without them the classifier is as in cluster/maas-cpu.yaml."""
    names = {"t": "--torch-threads", "l": "--low-load-threads", "r": "--replicas"}
    flags: list[str] = []
    for part in variant.split("-")[2:]:
        if part[:1] in names and part[1:].isdigit():
            flags += [names[part[0]], part[1:]]
    return flags


def maas_serve_env(name: str) -> dict[str, str]:
    """The Serve settings ``maas serve`` uses (none for Ray Serve LLM and ``-stock`` variants)."""
    from maas.cli import SERVE_THROUGHPUT_ENV

    if name == "rayllm" or name.endswith(SERVE_STOCK_SUFFIX):
        return {}
    env = dict(SERVE_THROUGHPUT_ENV)
    if "-grpc" in name:  # Serve's gRPC transport between the proxy and replicas, and handles
        env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] = "1"
    return env


class SystemFailedError(RuntimeError):
    """The system exited or never answered."""


class RunningSystem:
    """Context manager: the system runs inside the ``with`` block and is stopped after it."""

    def __init__(self, spec: SystemSpec, log_path: Path, startup_timeout_s: float) -> None:
        self.spec = spec
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def __enter__(self) -> RunningSystem:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        start = time.monotonic()
        self.process = subprocess.Popen(
            self.spec.argv, cwd=REPO_ROOT, env={**os.environ, **self.spec.env},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - start
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SystemFailedError(f"{self.spec.name} exited ({self.process.returncode}); "
                                        f"log {self.log_path}:\n{self.log_tail()}")
            try:
                response = httpx.post(self.spec.base_url + self.spec.probe_path,
                                      json=self.spec.probe_body, headers=self.spec.probe_headers, timeout=60)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(2)
        raise SystemFailedError(f"{self.spec.name} not ready after {self.startup_timeout_s}s: {last}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server, its process group and anything left in its private Ray."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            _wait(process, 90)
        _kill_group(process.pid)
        _wait(process, 5)
        if self.spec.ray_temp_dir:
            kill_matching(self.spec.ray_temp_dir)
            shutil.rmtree(self.spec.ray_temp_dir, ignore_errors=True)


def _wait(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass


def _kill_group(pgid: int) -> None:
    """SIGTERM, then SIGKILL, the process group ``pgid`` (the session we started)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end and _group_alive(pgid):
            time.sleep(0.5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _pids_matching(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (our private Ray folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_matching(marker: str) -> None:
    """SIGKILL leftovers of our private Ray (each one names its folder in its command line)."""
    for pid in _pids_matching(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
