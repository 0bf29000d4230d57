"""Schemas of /v1/pipelines/entities and the NER config refuse bad input."""

import pytest
from pydantic import ValidationError

from maas.endpoints.tasks.protocol import EntitiesRequest
from maas.engines.ner import NerConfig


def test_entities_request_shapes() -> None:
    assert EntitiesRequest(input="a").texts() == ["a"]
    assert EntitiesRequest.model_validate({"input": ["a", "b"], "extra": 1}).texts() == ["a", "b"]
    assert EntitiesRequest(input="a").model is None
    for bad in ({"input": []}, {}, {"input": "a", "model": ""}, {"input": 3}):
        with pytest.raises(ValidationError):
            EntitiesRequest.model_validate(bad)


def test_ner_config_is_strict() -> None:
    config = NerConfig.model_validate({"models": [{"name": "en", "path": "embedded:en-core-web-sm"}]})
    assert config.models[0].max_chars == 10_000
    assert config.deployment.num_cpus == 0.2
    with pytest.raises(ValidationError):
        NerConfig.model_validate({"models": [{"name": "en", "path": "p", "max_len": 3}]})
    with pytest.raises(ValidationError):
        NerConfig.model_validate({"models": [{"name": "en", "path": "p", "max_chars": 0}]})
