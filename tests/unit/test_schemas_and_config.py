"""Request schemas bound every parameter; configs refuse typos and build Serve options."""

import pytest
from pydantic import ValidationError

from maas.config import AppConfig, DeploymentOptions, load_app_config
from maas.endpoints.encoding.protocol import TokenizeRequest
from maas.endpoints.generation.protocol import CompletionRequest
from maas.protocol.chat import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 2.5},
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"n": 0},
        {"n": 100},
        {"max_tokens": 0},
        {"presence_penalty": 3},
        {"frequency_penalty": -3},
        {"top_logprobs": 50, "logprobs": True},
        {"top_logprobs": 2},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": "x" * 1000},
        {"seed": -1},
        {"top_k": -5},
        {"messages": []},
    ],
)
def test_chat_request_rejects_out_of_range(fields: dict) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **fields})


def test_chat_request_to_generation_params() -> None:
    request = ChatCompletionRequest.model_validate({
        "model": "m", "messages": MESSAGES, "temperature": 0, "stop": "\n", "top_k": 0,
        "max_completion_tokens": 7, "logprobs": True, "top_logprobs": 3,
    })
    params = request.generation_params(request.requested_max_tokens(), request.requested_logprobs())
    assert (params.temperature, params.stop, params.top_k, params.max_tokens, params.logprobs) == (
        0.0, ["\n"], -1, 7, 3)
    assert (params.ignore_eos, params.min_tokens, params.repetition_penalty) == (False, 0, 1.0)


def test_vllm_extensions_reach_the_engine_parameters() -> None:
    from maas.engines.generator import to_sampling_params

    request = ChatCompletionRequest.model_validate({
        "model": "m", "messages": MESSAGES, "ignore_eos": True, "min_tokens": 50,
        "repetition_penalty": 1.1})
    params = request.generation_params(20, None)
    assert params.min_tokens == 20  # never above max_tokens
    sampling = to_sampling_params(params)
    assert (sampling.ignore_eos, sampling.min_tokens, sampling.repetition_penalty) == (True, 20, 1.1)
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, "min_tokens": -1})


def test_completion_prompt_shapes() -> None:
    assert CompletionRequest(model="m", prompt=[1, 2, 3]).prompt == [1, 2, 3]
    with pytest.raises(ValidationError):
        CompletionRequest(model="m", prompt=[])


def test_tokenize_request_needs_exactly_one_input() -> None:
    with pytest.raises(ValidationError):
        TokenizeRequest(model="m")
    with pytest.raises(ValidationError):
        TokenizeRequest.model_validate({"model": "m", "prompt": "a", "messages": MESSAGES})
    assert TokenizeRequest(model="m", prompt="a").special_tokens() is True
    assert TokenizeRequest.model_validate({"model": "m", "messages": MESSAGES}).special_tokens() is False


def test_config_rejects_unknown_keys_and_duplicate_names() -> None:
    with pytest.raises(ValidationError):
        AppConfig.model_validate({"generatorz": []})
    with pytest.raises(ValidationError):
        AppConfig.model_validate({
            "classifier": {"models": [{"name": "a", "path": "/x"}]},
            "encoder": {"models": [{"name": "a", "path": "/y"}]},
        })


def test_deployment_options_to_serve_options() -> None:
    fixed = DeploymentOptions(num_cpus=0.5, num_replicas=2).to_serve_options()
    assert fixed["num_replicas"] == 2 and fixed["ray_actor_options"]["num_cpus"] == 0.5
    scaled = DeploymentOptions.model_validate({"autoscaling": {"min_replicas": 0, "max_replicas": 4}})
    options = scaled.to_serve_options()
    assert "num_replicas" not in options and options["autoscaling_config"]["max_replicas"] == 4


def test_default_serve_config_parses() -> None:
    config = load_app_config("cluster/maas-cpu.yaml")
    assert [g.name for g in config.generators] == ["smollm2-135m-instruct"]
    assert [m.name for m in config.classifier.models] == ["sentiment", "topic"]
    assert [m.name for m in config.encoder.models] == ["all-minilm-l6-v2"]


def test_serve_config_import_path_builds_the_graph() -> None:
    """`serve run cluster/maas-cpu.yaml` imports this builder with the config's args."""
    import importlib

    from ray.serve import Application

    from maas.config import load_serve_file

    app = load_serve_file("cluster/maas-cpu.yaml").applications[0]
    module, attr = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    assert isinstance(builder(app["args"]), Application)
