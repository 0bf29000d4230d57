"""Bounded work per request (``ingress.limits``, maas/endpoints/generation/budget.py): a request over the
budget is a 400 ``request_too_large`` naming the parameter to lower, before any engine work; a
stream past ``ingress.max_stream_s`` ends with an error event and its generator call is cancelled.

No Ray: the ingress's own preparation methods over a stand-in tokenizer, and the real app over a
stand-in ingress whose stream is slow (the stand-ins only inject the token counts and the slowness).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.ingress import MaasIngress
from maas.config import AppConfig, GeneratorModelConfig, IngressConfig
from maas.endpoints.app import build_app
from maas.endpoints.encoding.protocol import TokenizeRequest
from maas.endpoints.generation import budget
from maas.endpoints.generation.protocol import CompletionRequest, CompletionResponse
from maas.limits import RequestBudget
from maas.protocol.chat import ChatCompletionRequest, GenerationParams
from maas.protocol.errors import RequestTooLargeError
from maas.serving.calls import open_stream
from maas.serving.preparation import PreparationPool
from tests.unit.ingress_fakes import _Ingress

MODEL = "gen"
LIMITS = RequestBudget()


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": MODEL, "prompt": "hi", **fields})


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                 **fields})


class Prompts:
    """A stand-in PromptTokenizer: every prompt is ``tokens`` tokens long."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def check_size(self, model: str, texts: list[str], param: str) -> None:
        """No prompt here is far too long for the context."""

    def prompt_ids(self, model: str, prompt: Any, param: str = "prompt") -> list[int]:
        return [1] * self.tokens

    def chat_ids(self, model: str, messages: Any, tools: Any = None) -> list[int]:
        return [1] * self.tokens


def ingress(prompt_tokens: int, limits: RequestBudget = LIMITS, max_model_len: int = 8192,
            max_tokens_limit: int = 1024) -> Any:
    """What ``MaasIngress._prepare_*`` use of the ingress: its config, its tokenizer, its generator
    and its preparation pool (the token-count checks run there, after tokenizing)."""
    config = GeneratorModelConfig(name=MODEL, path="unused", max_model_len=max_model_len,
                                  max_tokens_limit=max_tokens_limit)
    self = _Ingress.__new__(_Ingress)
    self.config = AppConfig(generators=[config], ingress=IngressConfig(limits=limits))
    self.tokenizer = SimpleNamespace(prompts=Prompts(prompt_tokens))
    self.preparation = PreparationPool()
    self._generator_config = lambda _: config
    return self


def prepare(request: Any, prompt_tokens: int, **options: Any) -> tuple[Any, GenerationParams]:
    method = (MaasIngress.func_or_class._prepare_chat if isinstance(request, ChatCompletionRequest)
              else MaasIngress.func_or_class._prepare_completion)
    return asyncio.run(method(ingress(prompt_tokens, **options), request))


def refused(request: Any, prompt_tokens: int = 10, **options: Any) -> RequestTooLargeError:
    with pytest.raises(RequestTooLargeError) as caught:
        prepare(request, prompt_tokens, **options)
    assert caught.value.code == "request_too_large" and caught.value.status_code == 400
    return caught.value


def test_the_measured_amplification_is_refused_before_tokenizing() -> None:
    """64 prompts x n 8 x 1,024 tokens with ignore_eos: 524,288 tokens of generation."""
    request = completion(prompt=["p"] * 64, n=8, max_tokens=1024, ignore_eos=True, stream=True)
    error = refused(request, prompt_tokens=0)  # no tokens: refused on its fields alone
    assert error.param == "n" and "512 sequences" in error.message and "128" in error.message


@pytest.mark.parametrize("request_, prompt_tokens, param", [
    (completion(prompt=["p"] * 16, n=8, max_tokens=1024), 10, "max_tokens"),  # 131,072 to generate
    (completion(prompt=["p"] * 64, max_tokens=1024), 10, None),                # 65,536: the bound
    (completion(prompt=["p"] * 64, max_tokens=128), 4000, "max_tokens"),       # 64 x 4,128 in all
    (completion(prompt=["p"] * 64, max_tokens=1), 2048, None),                 # a scoring batch
    (chat(n=8, max_tokens=1024), 4000, None),
    (chat(n=8, max_completion_tokens=8200), 10, "max_completion_tokens"),  # 65,600 to generate
])
def test_tokens_are_bounded_once_the_prompts_are_tokenized(request_: Any, prompt_tokens: int,
                                                            param: str | None) -> None:
    if param is None:
        prepare(request_, prompt_tokens, max_model_len=16384, max_tokens_limit=16000)
    else:
        assert refused(request_, prompt_tokens, max_model_len=16384, max_tokens_limit=16000).param == param


def test_a_default_max_tokens_counts_as_asked() -> None:
    """No max_tokens: the default (the model's limit) is what the engine may generate."""
    prepare(completion(prompt=["p"] * 64), 10)  # 64 x 1,024
    assert refused(completion(prompt=["p"] * 64, n=2), 10).param == "max_tokens"  # 128 x 1,024
    assert refused(completion(prompt=["p"] * 11), 0, limits=RequestBudget(max_sequences=10)).param == "prompt"


@pytest.mark.parametrize("fields, param", [
    ({"echo": True, "logprobs": 20, "n": 8, "max_tokens": 1}, "logprobs"),  # 16 x 8 x 500 x 21
    ({"prompt_logprobs": 20, "n": 8, "max_tokens": 1}, "prompt_logprobs"),
    ({"logprobs": 20, "n": 8, "max_tokens": 256}, "logprobs"),  # generated positions
])
def test_log_probabilities_are_bounded_per_choice(fields: dict[str, Any], param: str) -> None:
    assert refused(completion(prompt=["p"] * 16, **fields), 500).param == param
    prepare(completion(prompt=["p"] * 16, **{**fields, "n": 1, "max_tokens": 1}), 500)  # 8x less: fine


def test_a_scoring_batch_passes() -> None:
    """An evaluation harness's loglikelihood batch: 64 prompts of 2,000 tokens, echo, logprobs 1."""
    prepare(completion(prompt=["p"] * 64, echo=True, logprobs=1, max_tokens=1), 2000)


def test_chat_log_probabilities_tools_and_schemas() -> None:
    assert refused(chat(n=8, max_tokens=1024, logprobs=True, top_logprobs=20),
                   limits=RequestBudget(max_logprob_entries=100_000)).param == "top_logprobs"
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
             for i in range(3)]
    assert refused(chat(tools=tools), limits=RequestBudget(max_tools=2)).param == "tools"
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(4000)}}
    assert refused(chat(tools=[{"type": "function", "function": {"name": "f", "parameters": big}}])).param == "tools"
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": big}}
    assert refused(chat(response_format=schema)).param == "response_format"


def test_tokenize_text_is_bounded() -> None:
    limits = RequestBudget(max_tokenize_chars=100)
    budget.check_tokenize(TokenizeRequest(model=MODEL, prompt="x" * 100), limits)
    for request, param in ((TokenizeRequest(model=MODEL, prompt="x" * 101), "prompt"),
                           (TokenizeRequest(model=MODEL, messages=[{"role": "user", "content": "x" * 60}] * 2),
                            "messages")):
        with pytest.raises(RequestTooLargeError) as caught:
            budget.check_tokenize(request, limits)
        assert caught.value.param == param


def test_the_limits_are_configurable_and_the_schema_bound_is_kept() -> None:
    config = AppConfig.model_validate({"ingress": {"max_stream_s": 30, "limits": {"max_sequences": 8}}})
    assert config.ingress.limits.max_sequences == 8 and config.ingress.max_stream_s == 30
    assert refused(completion(prompt=["p"] * 3, n=3), limits=config.ingress.limits).param == "n"
    with pytest.raises(ValueError):
        RequestBudget(max_tools=129)
    with pytest.raises(ValueError):
        RequestBudget(max_sequence=1)  # a typo is an error


# --------------------------------------------------------------------------- over HTTP


class Ingress:
    """The routes' ingress: completions checked by the real budget; streams that never end."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    def served_models(self) -> frozenset[str]:
        return frozenset({MODEL})

    async def models_used(self, body: Any, key_id: str | None = None) -> list[str]:
        return [body.model]

    async def completions(self, body: CompletionRequest) -> CompletionResponse:
        budget.check_completion(body, LIMITS)
        return CompletionResponse(model=MODEL, choices=[])

    async def open_completion_stream(self, body: CompletionRequest) -> AsyncIterator[CompletionResponse]:
        return await open_stream(SlowStream(self.closed))  # type: ignore[arg-type]


class SlowStream:
    """A generator call that yields a chunk every 0.2 s, forever; records its cancellation."""

    def __init__(self, closed: list[str]) -> None:
        self.closed = closed

    def __aiter__(self) -> SlowStream:
        return self

    async def __anext__(self) -> CompletionResponse:
        await asyncio.sleep(0.2)
        return CompletionResponse(model=MODEL, choices=[])

    def cancel(self) -> None:
        self.closed.append("cancelled")


class Metrics:
    """The metrics actor, left out (no Ray in unit tests)."""

    class record_many:  # noqa: N801 - the actor method's name
        @staticmethod
        def remote(events: list[Any]) -> None:
            pass


def client_of(ingress_: Ingress, config: IngressConfig) -> TestClient:
    app = build_app(ingress_, config)
    app.state.recorder._actor = Metrics()  # noqa: SLF001
    return TestClient(app)


def test_over_http_the_refusal_is_the_openai_body_naming_the_limit() -> None:
    client = client_of(Ingress(), IngressConfig())
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": ["p"] * 64, "n": 8})
    assert response.status_code == 400 and response.headers["x-maas-error-code"] == "request_too_large"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "n", "request_too_large")


def test_a_stream_past_max_stream_s_ends_with_an_error_event_and_its_call_is_cancelled() -> None:
    ingress_ = Ingress()
    client = client_of(ingress_, IngressConfig(max_stream_s=0.7))
    with client.stream("POST", "/v1/completions", json={"model": MODEL, "prompt": "p", "stream": True}) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert (error["code"], error["type"]) == ("stream_timeout", "timeout") and "0.7 s" in error["message"]
    assert 2 <= len(events) - 2 <= 4  # the chunks sent within the limit (about 3)
    assert ingress_.closed == ["cancelled"]  # the generator call is cancelled: vLLM aborts it


def test_without_a_limit_a_stream_is_passed_through() -> None:
    async def items() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async def run() -> list[int]:
        from maas.edge.admission import within

        return [i async for i in within(items(), None)] + [i async for i in within(items(), 5.0)]

    assert asyncio.run(run()) == [0, 1, 2, 0, 1, 2]


def test_a_slow_reader_past_the_limit_gets_the_error_and_the_call_is_cancelled() -> None:
    """The limit passes while the client reads (not while the stream waits for the engine): the
    next item is the error, and the closed chain of streams cancels its call (closed at a
    ``yield``, the inner streams are closed by asyncio's finalizer, a few loop turns later)."""
    from maas.edge.admission import within
    from maas.protocol.errors import StreamTimeoutError

    class ReadyStream(SlowStream):
        async def __anext__(self) -> CompletionResponse:
            return CompletionResponse(model=MODEL, choices=[])

    async def chunks(items: AsyncIterator[Any]) -> AsyncIterator[Any]:  # as maas.endpoints.generation.assemble's
        async for item in items:
            yield item

    async def run() -> tuple[int, list[str]]:
        closed: list[str] = []
        read = 0
        with pytest.raises(StreamTimeoutError):
            async for _ in within(chunks(await open_stream(ReadyStream(closed))), 0.3):  # type: ignore[arg-type]
                read += 1
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.1)
        return read, closed

    assert asyncio.run(run()) == (2, ["cancelled"])
