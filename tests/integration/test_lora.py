"""LoRA adapters end to end: trained by ``maas train``'s pipeline (Ray Train), stored in the registry,
served by vLLM's LoRA support through the real app (real Ray, HTTP, the openai client), equal to
vLLM offline with the same adapter, 404 for an unknown adapter, and rolled out from v1 to v2
under load with no failed request.

A dedicated application (route prefix ``/lora``) with one generator and a registry of its own;
the adapters are tiny (20 examples of 64 tokens, 2 and 4 steps): the test is about the plumbing,
not the accuracy (``benchmarks/results/lora_topic.json`` has the full run). v2's training run has
one of its workers SIGKILLed after its first checkpoint (step 2): it resumes from it and does the
last 2 steps, and the adapter it then stores is the one served and rolled out (one training run
shows both).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from maas.cli import main as maas_main
from maas.config import AppConfig
from tests.conftest import STARTUP_TIMEOUT_S, TEST_MAX_MODEL_LEN, free_port, wait_healthy

pytestmark = pytest.mark.integration

APP = "lora"
PREFIX = "/lora"
GENERATOR = "lora-smollm2"
ADAPTER = "topic-lora"
MAX_TOKENS = 6
TEXT_TOKENS = 64
"""Tokens of each article in the prompts, trained and asked alike (a training step's cost grows with it)."""
TINY = {"task": "lora-topic", "model_name": ADAPTER, "generator": GENERATOR, "max_train_examples": 20,
        "max_validation_examples": 5, "max_test_examples": 5, "max_steps": 2, "batch_size": 2,
        "learning_rate": 5e-3, "checkpoint_every_steps": 2, "eval_batch_size": 5, "log_every_steps": 2,
        "max_text_tokens": TEXT_TOKENS, "lenient_answer_tokens": 4}
V2_STEPS = 4
"""v2's steps: a checkpoint at step 2, the kill, then steps 3 and 4 from that checkpoint."""
REQUESTS = 36
CONCURRENCY = 4
SWITCH_AFTER = 12


def lora_app_config(smollm2_dir: Path, registry: Path) -> AppConfig:
    return AppConfig.model_validate({
        "generators": [{"name": GENERATOR, "path": str(smollm2_dir), "max_model_len": TEST_MAX_MODEL_LEN,
                        "kv_cache_gib": 1, "deployment": {"num_cpus": 0.2, "max_ongoing_requests": 32},
                        "lora": {"enabled": True, "max_rank": 8, "max_loras": 2, "adapters": [ADAPTER]}}],
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        "ingress": {"deployment": {"num_cpus": 0.05}},
        "registry_dir": str(registry),
    })


@pytest.fixture(scope="module")
def trained(ray_cluster: str, smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``topic-lora/v1`` (live) and ``v2`` (stored), trained by the production pipeline, and a Serve
    config file serving them (what ``maas rollout --config`` checks)."""
    from pipelines.training.lora import LoraTrainConfig, train_adapter

    home = tmp_path_factory.mktemp("lora")
    registry = home / "registry"
    config = lora_app_config(smollm2_dir, registry)
    serve_file = home / "serve.yaml"
    serve_file.write_text(yaml.safe_dump({"applications": [{"name": "maas", "args": config.model_dump(mode="json")}]}))
    common = {**TINY, "registry_dir": str(registry)}
    v1 = train_adapter(LoraTrainConfig.model_validate({**common, "seed": 0, "storage_path": str(home / "v1")}),
                       config)
    v2, killed = train_with_a_killed_worker(LoraTrainConfig.model_validate({
        **common, "seed": 1, "max_steps": V2_STEPS, "storage_path": str(home / "v2"), "max_failures": 2}), config)
    assert (v1.model_ref, v1.live, v2.model_ref, v2.live) == (f"{ADAPTER}/v1", True, f"{ADAPTER}/v2", False)
    return {"config": config, "registry": registry, "serve_file": serve_file, "home": home, "killed": killed,
            "paths": {v1.model_ref: v1.path, v2.model_ref: v2.path}, "metrics": v1.metrics,
            "v2_metrics": v2.metrics}


def train_with_a_killed_worker(config: Any, app: AppConfig) -> tuple[Any, int | None]:
    """``train_adapter`` with one training worker SIGKILLed after the run's first checkpoint."""
    import threading

    from pipelines.training.lora import train_adapter
    from tests.integration.test_training import kill_a_worker_after_first_checkpoint

    outcome: dict[str, Any] = {}
    run = threading.Thread(target=lambda: outcome.setdefault("result", train_adapter(config, app)))
    run.start()
    killed = kill_a_worker_after_first_checkpoint(Path(config.storage_path), timeout_s=600)
    run.join(timeout=800)
    return outcome["result"], killed


def chats(count: int = 3) -> list[list[dict[str, str]]]:
    """Topic questions about the first test-split articles, as the adapter was trained to answer."""
    from transformers import AutoTokenizer

    from maas.storage.embedded import prepare_smollm2
    from pipelines.training.lora_tasks import build_messages, generator_task, truncate_text
    from pipelines.training.training_data import load_examples, split_dataset

    tokenizer = AutoTokenizer.from_pretrained(prepare_smollm2())
    articles = split_dataset(load_examples("topic")).test[:count]
    return [build_messages(generator_task("lora-topic"), truncate_text(tokenizer, text, TEXT_TOKENS))
            for text, _ in articles]


@pytest.fixture(scope="module")
def lora_offline(trained: dict[str, Any], offline_engine: Any) -> dict[str, list[str]]:
    """Greedy answers of vLLM's offline ``LLM.chat``: base, v1 and v2, from the session's offline
    engine (the one of ``offline_reference``; asked before the app starts)."""
    job = {"chat": {"messages": chats(), "max_tokens": MAX_TOKENS}, "lora": {"adapters": trained["paths"]}}
    return offline_engine.run("lora_offline", job)["chat"]


@pytest.fixture(scope="module")
def lora_url(trained: dict[str, Any], lora_offline: dict[str, list[str]]) -> Iterator[str]:
    """The application on Serve's proxy (started here, on a free port, if Serve is not running)."""
    from ray import serve

    from pipelines.app import build_app
    from tests.integration.test_ner import serve_is_running
    from tests.integration.test_translator import serve_port

    started_here = not serve_is_running()
    if started_here:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()}, proxy_location="HeadOnly")
    serve.run(build_app(trained["config"]), name=APP, route_prefix=PREFIX, blocking=False)
    url = f"http://127.0.0.1:{serve_port()}{PREFIX}"
    try:
        wait_healthy(url, STARTUP_TIMEOUT_S)
        yield url
    finally:
        serve.delete(APP)
        if started_here:
            serve.shutdown()


@pytest.fixture(scope="module")
def openai_lora(lora_url: str):  # noqa: ANN201 - openai.OpenAI
    import openai

    return openai.OpenAI(base_url=f"{lora_url}/v1", api_key="unused", max_retries=0, timeout=120)


def answer(client: Any, model: str, messages: list[dict[str, str]]) -> Any:
    return client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0)


def test_killed_worker_resumes_lora_training_from_its_checkpoint(trained: dict[str, Any]) -> None:
    assert trained["killed"] is not None, "no checkpoint appeared"
    metrics = trained["v2_metrics"]
    assert metrics["global_step"] == V2_STEPS  # every step done, none twice
    assert metrics["resumed_from_step"] >= 2  # the restarted group began at a checkpoint


def test_training_recorded_the_adapter(trained: dict[str, Any]) -> None:
    from maas.storage.registry import ModelRegistry

    version = ModelRegistry(trained["registry"]).get(ADAPTER, "v1")
    assert version.config["kind"] == "lora-adapter" and version.config["generator"] == GENERATOR
    assert version.config["rank"] == 8 and version.config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert version.data_hash and {"test_accuracy", "base_test_accuracy", "global_step"} <= set(version.metrics)
    assert version.metrics["global_step"] == TINY["max_steps"]


def test_models_list_the_adapter_with_its_base(lora_url: str) -> None:
    cards = {c["id"]: c for c in httpx.get(f"{lora_url}/v1/models").json()["data"]}
    assert cards[ADAPTER]["parent"] == GENERATOR and cards[ADAPTER]["version"] == "v1"
    assert cards[ADAPTER]["capability"] == "generate" and cards[GENERATOR].get("parent") is None


def test_http_greedy_equals_offline_with_the_same_adapter(openai_lora: Any,
                                                         lora_offline: dict[str, list[str]]) -> None:
    offline = lora_offline
    # The tiny adapters do change the model's answers (else this test would prove nothing).
    assert offline[f"{ADAPTER}/v1"] != offline["base"] or offline[f"{ADAPTER}/v2"] != offline["base"]
    for i, messages in enumerate(chats()):
        live = answer(openai_lora, ADAPTER, messages)
        assert live.model == f"{ADAPTER}/v1" and live.choices[0].message.content == offline[f"{ADAPTER}/v1"][i]
        pinned = answer(openai_lora, f"{ADAPTER}/v2", messages)
        assert pinned.model == f"{ADAPTER}/v2" and pinned.choices[0].message.content == offline[f"{ADAPTER}/v2"][i]
        base = answer(openai_lora, GENERATOR, messages)
        assert base.choices[0].message.content == offline["base"][i]


def test_unknown_adapter_is_404(openai_lora: Any) -> None:
    import openai

    for model in ("no-such-adapter", f"{ADAPTER}/v9"):
        with pytest.raises(openai.NotFoundError) as error:
            answer(openai_lora, model, [{"role": "user", "content": "Hi"}])
        assert error.value.body["code"] == "model_not_found"


def test_prompt_logprobs_are_a_clear_400_and_the_engine_lives(openai_lora: Any) -> None:
    """vLLM cannot compute prompt log probabilities with LoRA on (a batch of two kills its engine):
    refused before the engine, which keeps answering."""
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        openai_lora.completions.create(model=GENERATOR, prompt="The capital of France is", max_tokens=1,
                                       echo=True, logprobs=1)
    assert error.value.body["param"] == "echo" and error.value.body["code"] == "unsupported_with_lora"
    assert answer(openai_lora, GENERATOR, [{"role": "user", "content": "Hi"}]).choices[0].message.content


def test_rollout_refuses_an_adapter_whose_base_is_not_served(trained: dict[str, Any], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    other = trained["config"].model_dump(mode="json")
    other["generators"][0]["name"] = "another-generator"
    other["generators"][0]["lora"]["adapters"] = []
    serve_file = tmp_path / "serve.yaml"
    serve_file.write_text(yaml.safe_dump({"applications": [{"name": "maas", "args": other}]}))
    args = ["rollout", ADAPTER, "v2", "--registry-dir", str(trained["registry"]), "--config", str(serve_file)]
    assert maas_main(args) == 2
    err = capsys.readouterr().err
    assert f"adapts the generator '{GENERATOR}'" in err and "does not serve" in err


async def chat_load(url: str, trained: dict[str, Any], log: list[dict]) -> float:
    """``REQUESTS`` greedy chats from ``CONCURRENCY`` clients; ``maas rollout`` to v2 after
    ``SWITCH_AFTER`` answers. Returns the time the rollout command returned."""
    prompts = chats()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    switch = {"t": float("inf")}

    async def one_client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait() % len(prompts)
            start = time.monotonic()
            response = await http.post("/v1/chat/completions", json={
                "model": ADAPTER, "messages": prompts[i], "max_tokens": MAX_TOKENS, "temperature": 0})
            log.append({"start": start, "end": time.monotonic(), "status": response.status_code, "prompt": i,
                        "body": response.json()})
            if len(log) == SWITCH_AFTER and switch["t"] == float("inf"):
                switch["t"] = 0.0
                args = ["rollout", ADAPTER, "v2", "--registry-dir", str(trained["registry"]),
                        "--config", str(trained["serve_file"])]
                assert await asyncio.to_thread(maas_main, args) == 0
                switch["t"] = time.monotonic()

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await asyncio.gather(*(one_client(http) for _ in range(CONCURRENCY)))
    return switch["t"]


@pytest.mark.timeout(900)
def test_rollout_v1_to_v2_under_load(lora_url: str, trained: dict[str, Any],
                                     lora_offline: dict[str, list[str]]) -> None:
    log: list[dict] = []
    switch_time = asyncio.run(chat_load(lora_url, trained, log))
    assert len(log) == REQUESTS and all(e["status"] == 200 for e in log), [e for e in log if e["status"] != 200]
    for entry in log:  # each answer is the one of the version it names
        model = entry["body"]["model"]
        assert entry["body"]["choices"][0]["message"]["content"] == lora_offline[model][entry["prompt"]]
    before = [e for e in log if e["end"] < switch_time]
    after = [e for e in log if e["start"] > switch_time]
    assert before and all(e["body"]["model"] == f"{ADAPTER}/v1" for e in before)
    assert after and all(e["body"]["model"] == f"{ADAPTER}/v2" for e in after)
    cards = {c["id"]: c for c in httpx.get(f"{lora_url}/v1/models").json()["data"]}
    assert cards[ADAPTER]["version"] == "v2"
