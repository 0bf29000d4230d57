"""A Ray job on a running cluster classifies a data set through the live app, like HTTP does.

A head started with ``ray start`` (token auth, dashboard on 127.0.0.1), the maas app deployed
through the dashboard with :func:`maas.deploy.deploy` (a tiny classifier only), then
``ray job submit --working-dir . -- python examples/classify_dataset.py``. Every label and
probability of the job must equal the answer of ``POST /v1/classify`` for the same texts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cluster_apps import TINY_CLASSIFIER, classifier_only_app, write_serve_config
from local_cluster import RAY_CLI, LocalCluster, free_port, start_cluster

from maas.deploy import format_status, replica_status

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
TEXTS = 200
BATCH = 10


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    started = start_cluster(num_cpus=4)
    try:
        yield started
    finally:
        started.stop()
        assert not started.pids(), "processes of the test cluster survived stop()"


@pytest.fixture(scope="module")
def service(cluster: LocalCluster, tiny_classifier_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> str:
    """The maas app (tiny classifier only) deployed with ``maas deploy``; yields its base URL."""
    port = free_port()
    args = classifier_only_app(tiny_classifier_dir, {"num_cpus": 0.2, "max_ongoing_requests": 64})
    config = write_serve_config(tmp_path_factory.mktemp("serve") / "serve.yaml", port, args)
    run = subprocess.run([sys.executable, "-m", "maas.cli", "deploy", str(config), "--address",
                          cluster.dashboard_url, "--wait", "--timeout", "300"],
                         cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "classifier" in run.stdout and "RUNNING" in run.stdout.upper()
    return f"http://127.0.0.1:{port}"


def _submit_job(cluster: LocalCluster, output: Path) -> subprocess.CompletedProcess[str]:
    command = [RAY_CLI, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".",
               "--submission-id", f"classify-{uuid.uuid4().hex[:8]}", "--",
               "python", "examples/classify_dataset.py", "--model", TINY_CLASSIFIER,
               "--limit", str(TEXTS), "--batch-size", "8", "--concurrency", "4",
               "--output", str(output)]
    return subprocess.run(command, cwd=ROOT, env=cluster.env, capture_output=True, text=True,
                          timeout=420)


def _classify_over_http(base_url: str, texts: list[str]) -> list[dict]:
    answers: list[dict] = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for start in range(0, len(texts), BATCH):
            response = client.post("/v1/classify", json={"model": TINY_CLASSIFIER,
                                                         "input": texts[start:start + BATCH]})
            response.raise_for_status()
            answers += response.json()["data"]
    return answers


@pytest.mark.long  # `make test-long`: a Ray job calling the live app is shown by
# tests/integration/test_handles_and_health.py::test_ray_job_calls_the_app_handle
def test_job_results_match_direct_http_calls(cluster: LocalCluster, service: str,
                                              tmp_path: Path) -> None:
    deployments = {d.name: d for d in replica_status(cluster.dashboard_url)}
    print(format_status(list(deployments.values())))
    assert deployments["classifier"].running() == 1

    output = tmp_path / "classified.json"
    started = time.monotonic()
    job = _submit_job(cluster, output)
    print(f"job finished in {time.monotonic() - started:.1f}s (rc={job.returncode})")
    print("\n".join(line for line in job.stdout.splitlines() if line.startswith("[job]")))
    assert job.returncode == 0, f"job failed:\n{job.stdout[-4000:]}\n{job.stderr[-4000:]}"
    assert "succeeded" in job.stdout.lower()

    results = json.loads(output.read_text())["results"]
    assert len(results) == TEXTS and [r["index"] for r in results] == list(range(TEXTS))
    reference = _classify_over_http(service, [r["text"] for r in results])
    assert [r["label"] for r in results] == [a["label"] for a in reference]
    for job_item, http_item in zip(results, reference):
        assert job_item["probs"] == pytest.approx(http_item["probs"], abs=1e-4)
