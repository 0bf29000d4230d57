"""The offline vLLM references of the integration tests, computed by one engine start.

:func:`run_offline_vllm` runs ``offline_vllm.py`` in a child process (one vLLM engine at a time
on 2 cores). :data:`REFERENCE_JOB` is what the session's reference holds: the greedy
completions and chats of ``test_generation`` and ``test_tensor_parallel`` and the prompt
log probabilities of ``test_tools_and_clients``; the ``offline_reference`` fixture of
``tests/conftest.py`` runs it once per session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("offline_vllm.py")
MAX_TOKENS = 24
"""Greedy answers' length in the generation and tensor-parallel references."""
COMPLETION_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Ünïcödé 世界 🎉 says"]
TENSOR_PARALLEL_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
QUESTIONS = ["What is the capital of France?", "Name three colours.", "¿Qué hora es? 日本語で答えて。"]
ECHO_PROMPTS = ["The capital of France is Paris.", "def add(a, b): return a + b"]


def reference_job() -> dict[str, Any]:
    """The parts of the session's reference (the model and its length are added by the fixture)."""
    prompts = list(dict.fromkeys(COMPLETION_PROMPTS + TENSOR_PARALLEL_PROMPTS))
    return {"generate": {"prompts": prompts, "max_tokens": MAX_TOKENS},
            "chat": {"messages": [[{"role": "user", "content": q}] for q in QUESTIONS], "max_tokens": MAX_TOKENS},
            "prompt_logprobs": {"prompts": ECHO_PROMPTS}}


def completion(reference: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The reference's greedy completion of ``prompt`` (text, token ids, prompt tokens)."""
    prompts = reference_job()["generate"]["prompts"]
    return reference["generate"][prompts.index(prompt)]


def run_offline_vllm(job: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run ``job`` (see ``offline_vllm.py``) on vLLM's offline engine; its results."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, str(SCRIPT), str(work / "job.json"), str(work / "out.json")],
                   check=True, timeout=600)
    return json.loads((work / "out.json").read_text())
