"""Classification and embeddings equal the transformers models' own outputs, batched or alone."""

import base64
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLASSIFIER, CLASSIFIER_V1, ENCODER, settled_metrics

pytestmark = pytest.mark.integration

TEXTS = ["I love this phone, it is brilliant!", "The service was slow and the food was cold.",
         "The meeting is at 3pm.", "Ça marche très bien 👍", "最悪の一日だった"] * 13  # 65 texts


def transformers_probs(model_dir: Path, texts: list[str], max_len: int) -> list[list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    out = []
    for text in texts:  # one at a time: the unbatched reference
        batch = tokenizer([text], truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            out.append(torch.softmax(model(**batch).logits.float(), -1)[0].tolist())
    return out


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_classify_alone_equals_transformers(client: httpx.Client, sentiment_dir: Path) -> None:
    expected = transformers_probs(sentiment_dir, TEXTS[:5], 64)
    for text, probs in zip(TEXTS[:5], expected):
        body = client.post("/v1/classify", json={"model": CLASSIFIER, "input": text}).json()
        item = body["data"][0]
        assert item["labels"] == ["negative", "neutral", "positive"]
        assert item["num_classes"] == 3
        assert item["probs"] == pytest.approx(probs, abs=1e-4)
        assert item["label"] == item["labels"][probs.index(max(probs))]
        assert body["usage"]["prompt_tokens"] > 0


def test_64_concurrent_requests_are_batched(client: httpx.Client, sentiment_dir: Path) -> None:
    texts = TEXTS[:64]
    expected = transformers_probs(sentiment_dir, texts, 64)
    before = settled_metrics(str(client.base_url).rstrip("/"))
    with ThreadPoolExecutor(max_workers=64) as pool:
        bodies = list(pool.map(
            lambda t: client.post("/v1/classify", json={"model": CLASSIFIER, "input": t}).json(), texts))
    for body, probs in zip(bodies, expected):
        assert body["data"][0]["probs"] == pytest.approx(probs, abs=1e-4)
    after = _metrics_after(client, before, 64)
    calls = metric_value(after, "maas_model_calls_total", model=CLASSIFIER_V1) - metric_value(
        before, "maas_model_calls_total", model=CLASSIFIER_V1)
    assert 1 <= calls < 64, f"{calls} model calls for 64 requests"
    assert metric_value(after, "maas_batch_size_sum", model=CLASSIFIER_V1) - metric_value(
        before, "maas_batch_size_sum", model=CLASSIFIER_V1) == 64


METRICS_WAIT_S = 60.0
"""Generous bound for a replica's metrics to reach ``/metrics`` (they are exported asynchronously)."""


def _metrics_after(client: httpx.Client, before: str, inputs: int) -> str:
    """Metrics are recorded asynchronously: poll until the batch sizes add up (bounded in time)."""
    import time

    target = metric_value(before, "maas_batch_size_sum", model=CLASSIFIER_V1) + inputs
    deadline = time.monotonic() + METRICS_WAIT_S
    while True:
        text = client.get("/metrics").text
        if metric_value(text, "maas_batch_size_sum", model=CLASSIFIER_V1) >= target or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_batched_list_input(client: httpx.Client, sentiment_dir: Path) -> None:
    expected = transformers_probs(sentiment_dir, TEXTS[:10], 64)
    body = client.post("/v1/classify", json={"model": CLASSIFIER, "input": TEXTS[:10]}).json()
    assert [d["index"] for d in body["data"]] == list(range(10))
    for item, probs in zip(body["data"], expected):
        assert item["probs"] == pytest.approx(probs, abs=1e-4)


def test_embeddings_with_openai_client(openai_client, minilm_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = ["A man is eating food.", "Someone is having a meal.", "The stock market fell."]
    response = openai_client.embeddings.create(model=ENCODER, input=texts)  # base64 by default
    vectors = [d.embedding for d in response.data]
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    model = AutoModel.from_pretrained(str(minilm_dir)).eval()
    batch = tokenizer(texts[:1], return_tensors="pt")
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(model(**batch).last_hidden_state.mean(1), dim=1)[0]
    assert len(vectors) == 3 and len(vectors[0]) == 384
    assert vectors[0] == pytest.approx(reference.tolist(), abs=1e-4)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vectors[0], vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2])
    assert response.usage.prompt_tokens > 0


def test_embeddings_float_and_base64_agree(client: httpx.Client) -> None:
    as_float = client.post("/v1/embeddings", json={"model": ENCODER, "input": "hello",
                                                   "encoding_format": "float"}).json()
    as_b64 = client.post("/v1/embeddings", json={"model": ENCODER, "input": "hello",
                                                 "encoding_format": "base64"}).json()
    raw = base64.b64decode(as_b64["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert decoded == pytest.approx(as_float["data"][0]["embedding"], abs=1e-6)


def test_metrics_expose_the_service(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    for name in ("maas_requests_total", "maas_request_errors_total", "maas_prompt_tokens_total",
                 "maas_completion_tokens_total", "maas_time_to_first_token_seconds",
                 "maas_batch_size", "maas_model_calls_total", "maas_request_latency_seconds"):
        assert f"# TYPE {name} " in text, name
