"""Python handles (from a separate Ray job), health, docs, and abort on client disconnect."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLASSIFIER, GENERATOR

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_ray_job_calls_the_app_handle(service: str, ray_cluster: str, client: httpx.Client) -> None:
    script = Path(__file__).with_name("job_calls_handles.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script), ray_cluster, CLASSIFIER, GENERATOR],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["translation"] == {"engine": "translator", "output": "Bom dia, meu amigo."}
    over_http = client.post("/v1/classify", json={"model": CLASSIFIER, "input": ["great!", "awful"]}).json()
    for from_job, from_http in zip(result["classify"], over_http["data"], strict=True):
        assert from_job["probs"] == pytest.approx(from_http["probs"], abs=1e-4)
    assert result["chunks"] > 1
    assert result["streamed"] == result["whole"] and "Paris" in result["whole"]
    detok = client.post("/v1/detokenize", json={"model": GENERATOR, "tokens": result["tokens"]}).json()
    assert detok["prompt"] == "héllo 世界"


def test_health_and_docs(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert set(health.json()["deployments"]) == {"tokenizer", f"generator:{GENERATOR}", "classifier", "encoder", "ner",
                                                   "translator"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/classify",
            "/v1/tokenize", "/v1/detokenize", "/v1/models"} <= set(paths)


def _running(generator_handle) -> int:
    return generator_handle.running_requests.remote().result()


def test_client_disconnect_aborts_the_engine_request(service: str) -> None:
    from ray import serve

    from pipelines.app import generator_deployment_name

    generator = serve.get_deployment_handle(generator_deployment_name(GENERATOR), "maas")
    body = {"model": GENERATOR, "stream": True, "max_tokens": 250, "temperature": 0.8,
            "messages": [{"role": "user", "content": "Write a very long essay about the sea."}]}
    with httpx.Client(base_url=service, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            received = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in received)
            assert _running(generator) >= 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running(generator) > 0:
        time.sleep(0.5)
    assert _running(generator) == 0
