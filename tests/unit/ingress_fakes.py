"""The real ingress (:class:`deployments.ingress.MaasIngress`) and its HTTP app, without Ray: the
generator handle and the tokenizer are fakes, so tests can inject a slow preparation, a
never-ending generation and a client that goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from deployments.ingress import MaasIngress
from maas.config import AppConfig, GeneratorModelConfig, IngressConfig
from maas.edge import key_file
from maas.edge.fair_share import FairShare
from maas.endpoints.app import build_app
from maas.endpoints.feedback.api import Feedback, FeedbackLimits
from maas.protocol.chat import GenerationChunk, GenerationParams, GenerationResult
from maas.protocol.errors import ContextLengthExceededError
from maas.serving.cold_start import ColdStarts, ReplicaCounts
from maas.serving.preparation import PreparationPool

PROMPT_TOKENS = 5
MAX_CHARS = 1000


class Prompts:
    """A stand-in for PromptTokenizer: five tokens a prompt; ``slow`` models wait for ``gate``."""

    def __init__(self, slow: set[str] | None = None) -> None:
        self.slow = slow or set()
        self.gate = threading.Event()
        self.released: list[bool] = []
        self.threads: list[str] = []

    def check_size(self, model: str, texts: list[str], param: str) -> None:
        if sum(map(len, texts)) > MAX_CHARS:
            raise ContextLengthExceededError("far too long", param)

    def chat_ids(self, model: str, messages: list[Any], tools: Any = None) -> list[int]:
        return self._ids(model)

    def prompt_ids(self, model: str, prompt: Any, param: str = "prompt") -> list[int]:
        return self._ids(model)

    def _ids(self, model: str) -> list[int]:
        self.threads.append(threading.current_thread().name)
        if model in self.slow:  # a long template or prompt: holds its thread, not the event loop
            self.released.append(self.gate.wait(timeout=5))
        return [1] * PROMPT_TOKENS


class EngineStream:
    """A streaming generator call: one token per result, ``delay_s`` apart, until cancelled."""

    def __init__(self, delay_s: float, tokens: int) -> None:
        self.delay_s, self.tokens = delay_s, tokens
        self.produced = 0
        self.cancelled = False

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> GenerationResult:
        if self.produced >= self.tokens:
            raise StopAsyncIteration
        await asyncio.sleep(self.delay_s)
        self.produced += 1
        finish = "length" if self.produced == self.tokens else None
        return GenerationResult(chunks=[GenerationChunk(index=0, text="a", token_ids=[7], finish_reason=finish)],
                                prompt_tokens=PROMPT_TOKENS, completion_tokens=self.produced)

    def cancel(self) -> None:
        self.cancelled = True


class EngineCall:
    """A whole-answer generator call; ``hang`` never answers (a long generation)."""

    def __init__(self, params: GenerationParams, hang: bool) -> None:
        self.params, self.hang = params, hang
        self.started = asyncio.Event()
        self.cancelled = False

    def __await__(self) -> Any:
        return self._answer().__await__()

    async def _answer(self) -> GenerationResult:
        self.started.set()
        if self.hang:
            await asyncio.Event().wait()
        return GenerationResult(chunks=[GenerationChunk(index=0, text="ok", finish_reason="stop")],
                                prompt_tokens=PROMPT_TOKENS, completion_tokens=2)

    def cancel(self) -> None:
        self.cancelled = True


class Method:
    def __init__(self, call: Callable[..., Any]) -> None:
        self.remote = call


class Generator:
    """A generator deployment handle: ``generate`` (whole answers) and ``generate_stream``."""

    def __init__(self, delay_s: float = 0.005, tokens: int = 10_000, hang: bool = False) -> None:
        self.streams: list[EngineStream] = []
        self.calls: list[EngineCall] = []
        self.generate_stream = Method(lambda ids, params: self._add(self.streams, EngineStream(delay_s, tokens)))
        self.generate = Method(lambda ids, params: self._add(self.calls, EngineCall(params, hang)))
        self.awake = asyncio.Event()  # a replica runs: set at once unless a test starts it cold
        self.awake.set()
        self.pings = 0
        self.ping = Method(lambda: self._ping())

    async def _ping(self) -> bool:
        self.pings += 1
        await self.awake.wait()
        return True

    @staticmethod
    def _add(calls: list[Any], call: Any) -> Any:
        calls.append(call)
        return call

    def options(self, **_: Any) -> Generator:
        return self


class NoAdapters:
    def is_adapter_name(self, model: str) -> bool:
        return False

    def names(self) -> list[str]:
        return []


class Tokenizer:
    def __init__(self, prompts: Prompts) -> None:
        self.prompts = prompts


class _Ingress(MaasIngress.func_or_class):  # type: ignore[misc,name-defined]
    def __del__(self) -> None:
        """Serve's replica wrapper shuts its ASGI app down here; this one never started."""


def ingress(generators: dict[str, Generator], prompts: Prompts, cold: ColdStarts | None = None) -> Any:
    """A :class:`MaasIngress` with only what the generation path and ``/v1/models`` use (no Ray, no
    models); ``cold``: its scale-to-zero deployments and their replica counts (default: none)."""
    self = _Ingress.__new__(_Ingress)
    self.generators = generators
    self.generator_configs = {name: GeneratorModelConfig(name=name, path="/nowhere", max_model_len=256)
                              for name in generators}
    self.config = AppConfig(generators=list(self.generator_configs.values()))  # ingress.limits: the defaults
    self.fair_share = FairShare.of(self.config)  # ingress.fair_share: the defaults
    self.adapters = NoAdapters()
    self.tokenizer = Tokenizer(prompts)
    self.preparation = PreparationPool()
    self._served = frozenset(generators)  # the metrics' model labels
    self.feedback_api = Feedback("/nonexistent", "/nonexistent", lambda model: None,
                                 FeedbackLimits(retention_s=0))  # answers not remembered unless a test says
    self.cold = cold or ColdStarts({}, ReplicaCounts(dict, 2.0))
    self.model_deployments = self.config.model_deployments()
    self.ner_models = ()
    self.pipelines = SimpleNamespace(backend=SimpleNamespace(translators={}))
    return self


def app(tmp_path: Path, generators: dict[str, Generator], prompts: Prompts | None = None,
        cold: ColdStarts | None = None) -> tuple[Any, str]:
    """The ingress's HTTP app over :func:`ingress`, with one API key (its secret is returned)."""
    keys = tmp_path / "keys.yaml"
    secret = key_file.add_key(keys, "tenant", tpm=1_000_000)
    built = build_app(ingress(generators, prompts or Prompts(), cold), IngressConfig(api_keys_file=str(keys)))
    built.state.ingress.key_auth = built.state.key_auth
    built.state.recorder._send = lambda events: None  # metrics go to a Ray actor: not here
    return built, secret


def charged(app: Any) -> int:
    """The tokens charged to the key in the current minute."""
    return app.state.key_auth.limiter.usage("tenant")[1]


def chat(model: str, stream: bool, max_tokens: int = 50) -> dict[str, Any]:
    return {"model": model, "stream": stream, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Write a long essay about the sea."}]}


async def drain(items: AsyncIterator[Any]) -> None:
    async for _ in items:
        pass
