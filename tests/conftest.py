"""Shared fixtures: one real local Ray, the real models, and the maas application over HTTP.

The service fixture starts the production graph (``pipelines.app.build_app``) with a test
config: vLLM's CPU build serving SmolLM2, a sentiment classifier fine-tuned by the project's
own Ray Train pipeline on a small budget, MiniLM embeddings, spaCy NER and the translator. The
keyed_service fixture adds one ingress with API keys over that app's generator and tokenizer.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import contextlib  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from maas.config import AppConfig  # noqa: E402

GENERATOR = "smollm2-135m-instruct"
CLASSIFIER = "sentiment"
CLASSIFIER_V1 = "sentiment/v1"
TOPIC = "topic"
ENCODER = "all-minilm-l6-v2"
NER = "en-core-web-sm"
TRANSLATOR = "firefox-translations-en-pt"
TEST_MAX_MODEL_LEN = 512
STARTUP_TIMEOUT_S = 420
KEYED_APP = "keyed"
KEYED_MAX_STREAM_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real local Ray (logical CPUs above the 2 cores so the graph and training both fit)."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="serve",
                 _node_ip_address="127.0.0.1")
        started = True
    yield ray.get_runtime_context().gcs_address
    if started:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from maas.storage.embedded import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def offline_engine(request: pytest.FixtureRequest, smollm2_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """vLLM's offline engine on the served model, started at its first job and stopped after the
    last job of the session's tests: every offline reference from one engine start
    (``tests/integration/offline.py``)."""
    from tests.integration.offline import JOB_FIXTURES, OfflineEngine

    expected = {name for item in request.session.items for name in item.fixturenames if name in JOB_FIXTURES}
    engine = OfflineEngine(smollm2_dir, TEST_MAX_MODEL_LEN, tmp_path_factory.mktemp("offline"), expected)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def offline_reference(offline_engine: Any) -> dict:
    """vLLM's offline greedy answers and prompt log probabilities on the served model, computed
    once per session."""
    from tests.integration.offline import reference_job

    return offline_engine.run("offline_reference", reference_job())


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from maas.storage.embedded import minilm_path

    return minilm_path()


def small_train_config(task: str, registry: Path, **overrides: object):  # noqa: ANN201 - TrainConfig
    """A small, fast run of the production training pipeline (2 workers x 0.5 CPU)."""
    from pipelines.training.train import TrainConfig

    values = {"task": task, "registry_dir": str(registry), "max_train_examples": 240,
              "max_eval_examples": 64, "epochs": 1, "max_seq_len": 32, "batch_size": 16,
              "storage_path": str(registry.parent / "ray_train")}
    return TrainConfig.model_validate({**values, **overrides})


@pytest.fixture(scope="session")
def registry_dir(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry with ``sentiment/v1`` and ``topic/v1`` live, trained by the real pipeline."""
    from pipelines.training.train import train_classifier

    registry = tmp_path_factory.mktemp("maas") / "registry"
    for task in ("sentiment", "topic"):
        result = train_classifier(small_train_config(task, registry))
        assert result.model_ref == f"{task}/v1" and result.live
    return registry


@pytest.fixture(scope="session")
def sentiment_dir(registry_dir: Path) -> Path:
    """The folder of ``sentiment/v1``."""
    return registry_dir / "sentiment" / "v1"


def test_app_config(smollm2_dir: Path, registry_dir: Path, minilm_dir: Path) -> AppConfig:
    """The config of the application under test: small replicas for a 2-core machine."""
    return AppConfig.model_validate({
        "generators": [{
            "name": GENERATOR, "path": str(smollm2_dir), "max_model_len": TEST_MAX_MODEL_LEN,
            "max_tokens_limit": 256, "kv_cache_gib": 1,
            "deployment": {"num_cpus": 0.5, "max_ongoing_requests": 64},
        }],
        "classifier": {
            "models": [{"name": CLASSIFIER, "path": "registry:sentiment", "max_seq_len": 64},
                       {"name": TOPIC, "path": "registry:topic", "max_seq_len": 64}],
            "batching": {"max_batch_size": 32, "batch_wait_timeout_s": 0.02},
            "deployment": {"num_cpus": 0.2, "max_ongoing_requests": 128},
            # every request shadowed while a challenger exists: only in test_shadow.py and before
            # test_rollout.py's switch (its v2, trained and not yet live); the rest have none
            "shadow": {"fraction": 1.0, "max_in_flight": 4},
            # canaries judged after few requests (tests/integration/test_canary.py); a generous
            # latency ratio: a few samples on a shared machine must not roll a good copy back
            "canary": {"min_requests": 4, "promote_after_requests": 24, "max_error_rate_margin": 0.1,
                       "max_p95_latency_ratio": 10.0, "latency_samples": 50},
            "promotion": {"min_shadow_texts": 4, "min_agreement": 0.9},
        },
        "encoder": {
            "models": [{"name": ENCODER, "path": str(minilm_dir), "max_seq_len": 128}],
            "deployment": {"num_cpus": 0.2, "max_ongoing_requests": 128},
        },
        "ner": {
            "models": [{"name": NER, "path": f"embedded:{NER}"}],
            "deployment": {"num_cpus": 0.1, "max_ongoing_requests": 128},
        },
        "translator": {
            "models": [{"name": TRANSLATOR}],
            # scale to zero: no replica at the start; the first translation (test_cold_start_from_zero.py
            # sorts before the other users) starts one, which then stays for the session
            "deployment": {"num_cpus": 0.1, "max_ongoing_requests": 128, "cold_start_timeout_s": 180,
                           "autoscaling": {"min_replicas": 0, "max_replicas": 1, "initial_replicas": 0,
                                           "downscale_to_zero_delay_s": 7200}},
        },
        "registry_dir": str(registry_dir),
        "batch_dir": str(registry_dir.parent / "batches"),
    })


test_app_config.__test__ = False  # a helper, not a test


def wait_healthy(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/health", timeout=15)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(2)
    raise TimeoutError(f"service not healthy after {timeout_s}s: {last}")


def settled_metrics(base_url: str, unchanged_for_s: float = 1.0, timeout_s: float = 30) -> str:
    """``/metrics`` once earlier requests' metrics have all arrived.

    Replicas buffer metrics and send them every ``FLUSH_INTERVAL_S``: a read right after a request
    can miss it, and a later read would count it as new. Two reads ``unchanged_for_s`` apart with
    the same ``maas_batch_size_sum`` lines (every engine's inputs) mean nothing is in flight.
    """
    def read() -> tuple[str, list[str]]:
        text = httpx.get(f"{base_url}/metrics", timeout=30).text
        return text, [line for line in text.splitlines() if line.startswith("maas_batch_size_sum")]

    deadline = time.monotonic() + timeout_s
    text, lines = read()
    while time.monotonic() < deadline:
        time.sleep(unchanged_for_s)
        previous = lines
        text, lines = read()
        if lines == previous:
            break
    return text


@pytest.fixture(scope="session")
def app_config(smollm2_dir: Path, registry_dir: Path, minilm_dir: Path) -> AppConfig:
    return test_app_config(smollm2_dir, registry_dir, minilm_dir)


@pytest.fixture(scope="session")
def service(ray_cluster: str, app_config: AppConfig) -> Iterator[str]:
    """The maas application on a free loopback port; yields its base URL."""
    from ray import serve

    from pipelines.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    serve.run(build_app(app_config), name="maas", route_prefix="/", blocking=False)
    base_url = f"http://127.0.0.1:{port}"
    wait_healthy(base_url, STARTUP_TIMEOUT_S)
    yield base_url
    serve.delete("maas")


@pytest.fixture(scope="session")
def client(service: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def openai_client(service: str):  # noqa: ANN201 - openai.OpenAI
    import openai

    return openai.OpenAI(base_url=f"{service}/v1", api_key="unused", max_retries=0, timeout=120)


@dataclass(frozen=True)
class KeyedService:
    """The keyed ingress of :func:`keyed_service`: its base URL, its Serve app and its keys' secrets."""

    url: str
    app: str
    secrets: dict[str, str]

    def bearer(self, key_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[key_id]}"}


@pytest.fixture(scope="session")
def keyed_service(service: str, app_config: AppConfig,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedService]:
    """The production ingress (``MaasIngress``) with a key file and ``max_stream_s`` = 5, whose
    generator and tokenizer handles are the session app's deployments: one ingress replica starts
    (about 25 s here, once a session), no second vLLM engine, and the code that checks keys, meters, limits and
    stores is the one of ``build_app``'s graph. Keys, each allowed the generator: ``dropper`` (20
    tokens a minute, for a test that spends them), ``streamer``, ``ann`` and ``ben``."""
    from ray import serve

    from deployments.ingress import MaasIngress
    from maas.edge import key_file
    from maas.edge.auth import SharedRateLimiter
    from pipelines.app import APP_NAME, generator_deployment_name

    keys = tmp_path_factory.mktemp("keyed") / "api-keys.yaml"
    secrets = {"dropper": key_file.add_key(keys, "dropper", [GENERATOR], tpm=20)}
    secrets |= {name: key_file.add_key(keys, name, [GENERATOR], tpm=1_000_000) for name in ("streamer", "ann", "ben")}
    config = AppConfig.model_validate({
        "generators": [app_config.generators[0].model_dump()],
        "ingress": {"api_keys_file": str(keys), "max_stream_s": KEYED_MAX_STREAM_S,
                    # may run two replicas: each key's counts then live in one limiter actor, which
                    # tests read (a high target keeps it at one)
                    "deployment": {"num_cpus": 0.05, "autoscaling": {
                        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1000}}},
        "registry_dir": app_config.registry_dir,
        "batch_dir": str(tmp_path_factory.mktemp("keyed-batches")),
    })
    tokenizer = serve.get_deployment_handle("tokenizer", APP_NAME)
    generator = serve.get_deployment_handle(generator_deployment_name(GENERATOR), APP_NAME)
    app = MaasIngress.options(**config.ingress.deployment.to_serve_options()).bind(
        config, tokenizer, {GENERATOR: generator}, None, None)
    serve.run(app, name=KEYED_APP, route_prefix=f"/{KEYED_APP}", blocking=False)
    wait_healthy(f"{service}/{KEYED_APP}", 180)
    yield KeyedService(f"{service}/{KEYED_APP}", KEYED_APP, secrets)
    serve.delete(KEYED_APP, _blocking=False)  # the session's end shuts Serve down anyway
    import ray

    with contextlib.suppress(ValueError):  # the limiter actor is detached: it outlives the app
        ray.kill(ray.get_actor(SharedRateLimiter(KEYED_APP).actor_name, namespace=SharedRateLimiter.NAMESPACE))
