"""The offline vLLM references of the integration tests, all from one engine start.

:class:`OfflineEngine` runs ``offline_vllm.py --serve`` in a child process: vLLM's offline engine
on the served model, with LoRA on (rank up to :data:`MAX_LORA_RANK`), started at the first job and
kept for the next ones (on 2 cores a vLLM start is a minute of the suite), and stopped once the
last job the session will send it is done. The session's ``offline_engine`` fixture
(``tests/conftest.py``) holds one; the fixtures named in :data:`JOB_FIXTURES` send it their job:
:func:`reference_job` (``offline_reference``: the greedy completions and chats of
``test_generation`` and ``test_tensor_parallel`` and the prompt log probabilities of
``test_tools_and_clients``) and the adapters' chats of ``test_lora`` (``lora_offline``).

With LoRA on, a request without an adapter gets the base model's answer bit for bit (seen on an
AVX2 machine: every text, token id and prompt log probability of :func:`reference_job` equal with
LoRA on and off); ``test_generation`` compares those answers with the service's generator, which
has no LoRA, token for token.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

SCRIPT = Path(__file__).with_name("offline_vllm.py")
MAX_TOKENS = 24
"""Greedy answers' length in the generation and tensor-parallel references."""
MAX_LORA_RANK = 8
"""The highest adapter rank the engine takes (``test_lora``'s adapters are rank 8)."""
START_TIMEOUT_S = 600
JOB_FIXTURES = ("offline_reference", "lora_offline")
"""The fixtures that send the engine a job, each once per session (their results are cached)."""
JOB_TIMEOUT_S = 600
COMPLETION_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Ünïcödé 世界 🎉 says"]
TENSOR_PARALLEL_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
QUESTIONS = ["What is the capital of France?", "Name three colours.", "¿Qué hora es? 日本語で答えて。"]
ECHO_PROMPTS = ["The capital of France is Paris.", "def add(a, b): return a + b"]


def reference_job() -> dict[str, Any]:
    """The parts of the session's reference."""
    prompts = list(dict.fromkeys(COMPLETION_PROMPTS + TENSOR_PARALLEL_PROMPTS))
    return {"generate": {"prompts": prompts, "max_tokens": MAX_TOKENS},
            "chat": {"messages": [[{"role": "user", "content": q}] for q in QUESTIONS], "max_tokens": MAX_TOKENS},
            "prompt_logprobs": {"prompts": ECHO_PROMPTS}}


def completion(reference: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The reference's greedy completion of ``prompt`` (text, token ids, prompt tokens)."""
    prompts = reference_job()["generate"]["prompts"]
    return reference["generate"][prompts.index(prompt)]


class OfflineEngine:
    """``offline_vllm.py --serve`` on ``model_dir``: started by the first :meth:`run`, stopped
    after the last of the ``expected`` jobs (or by :meth:`close`); its log is ``engine.log`` in
    ``work``."""

    def __init__(self, model_dir: Path, max_model_len: int, work: Path, expected: set[str]) -> None:
        self.engine = {"model_dir": str(model_dir), "max_model_len": max_model_len,
                       "lora": {"max_lora_rank": MAX_LORA_RANK}}
        self.work = work
        self.expected = set(expected)
        self.process: subprocess.Popen[str] | None = None
        self.jobs = 0

    def run(self, name: str, job: dict[str, Any]) -> dict[str, Any]:
        """The results of the job ``name`` (see ``offline_vllm.py``; without ``model_dir``,
        ``max_model_len`` and a ``max_lora_rank``: the engine's)."""
        process = self._started()
        self.jobs += 1
        job_file, out_file = self.work / f"job-{self.jobs}.json", self.work / f"out-{self.jobs}.json"
        job_file.write_text(json.dumps(job))
        assert process.stdin is not None
        process.stdin.write(f"{job_file} {out_file}\n")
        process.stdin.flush()
        self._expect("done", JOB_TIMEOUT_S)
        self.expected.discard(name)
        if not self.expected:  # no later job in this session: its memory goes back now
            self.close()
        return json.loads(out_file.read_text())

    def close(self) -> None:
        """Stop the engine (its stdin closes: it shuts vLLM down and exits)."""
        if self.process is None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def _started(self) -> subprocess.Popen[str]:
        if self.process is None:
            self.work.mkdir(parents=True, exist_ok=True)
            engine_file = self.work / "engine.json"
            engine_file.write_text(json.dumps(self.engine))
            with (self.work / "engine.log").open("a") as log:
                self.process = subprocess.Popen(
                    [sys.executable, str(SCRIPT), "--serve", str(engine_file)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=log, text=True)
            self._expect("ready", START_TIMEOUT_S)
        return self.process

    def _expect(self, reply: str, timeout_s: float) -> None:
        assert self.process is not None and self.process.stdout is not None
        line = _read_line(self.process.stdout, timeout_s)
        if line != reply:
            log = (self.work / "engine.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the offline engine answered {line!r}, not {reply!r}; its log:\n{log}")


def _read_line(stream: IO[str], timeout_s: float) -> str:
    """One line of the engine's replies ('' once it has exited or after ``timeout_s``)."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return stream.readline().strip() if ready else ""
