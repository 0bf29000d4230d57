"""Generator engine: vLLM's v1 ``AsyncLLM`` over token-id prompts (plain Python, no Serve).

Continuous batching is vLLM's; this wrapper turns :class:`GenerationParams` into vLLM's
``SamplingParams``, streams deltas as :class:`GenerationResult` messages and aborts the engine
request when the consumer goes away (the generator is closed or cancelled).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from maas.config import GeneratorModelConfig
from maas.engines.cache_stats import PrefixCacheCounts, counting_logger
from maas.engines.lora import lora_engine_kwargs
from maas.generation_rules.params import check_prompt_logprobs
from maas.generation_rules.tools import ToolCalls, check_tool_parser, tool_calls_for
from maas.protocol.chat import (
    GenerationChunk,
    GenerationParams,
    GenerationResult,
    PromptLogprob,
    PromptLogprobs,
    TokenLogprob,
    TopLogprob,
)
from maas.protocol.errors import EngineError, InvalidRequestError, ServiceUnavailableError
from maas.storage.embedded import resolve_model_path

PROGRESS_PROOF_S = 20.0
"""A busy engine that produced output this recently is healthy without a probe request."""


def resolve_dtype(dtype: str, on_gpu: bool) -> str:
    """The dtype vLLM gets. ``auto`` on a CPU is float32: vLLM's CPU backend in bfloat16 changed
    SmolLM2's greedy answers on a CPU with AMX ("What is the capital of France?" gave "L'Étoile, la
    Marseillaise, ..." in bfloat16 and "The capital of France is Paris." in float32, offline as
    served), and bfloat16 is emulated and slow on AVX2-only CPUs. Ask for ``bfloat16`` explicitly
    to trade that for speed. On a GPU, ``auto`` is left to vLLM (the model's own dtype)."""
    if dtype != "auto" or on_gpu:
        return dtype
    return "float32"


def build_engine_args(config: GeneratorModelConfig, on_gpu: bool) -> Any:
    """vLLM ``AsyncEngineArgs`` for a model config."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    if not on_gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(config.kv_cache_gib))))
        # glibc's per-thread malloc arenas let a long-running CPU worker's RSS creep up; read by
        # the engine's worker processes, which start after this.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        if config.cpu_threads_bind != "auto":  # read by vLLM's CPU worker processes
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_threads_bind
        lower_cpu_priority(config.cpu_nice_increment)
    kwargs: dict[str, Any] = {
        "model": str(resolve_model_path(config.path)),
        "served_model_name": config.name,
        "dtype": resolve_dtype(config.dtype, on_gpu),
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "stream_interval": config.stream_interval,
        "enforce_eager": config.enforce_eager,
        "disable_log_stats": True,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
    }
    if config.num_devices > 1:
        kwargs["distributed_executor_backend"] = executor_backend(on_gpu)
    if on_gpu:
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
    # Compact JSON: vLLM's xgrammar backend reads "no free whitespace" from the engine's config,
    # not from a request's StructuredOutputsParams, and free whitespace let a sampled answer spend
    # max_tokens on runs of spaces.
    kwargs["structured_outputs_config"] = StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)
    kwargs.update(lora_engine_kwargs(config))
    kwargs.update(config.engine_kwargs)
    return AsyncEngineArgs(**kwargs)


def lower_cpu_priority(increment: int) -> None:
    """Add ``increment`` to the niceness of this process (at most 19), and so of the engine
    processes it starts after this."""
    if increment <= 0:
        return
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
    # Linux keeps a niceness per thread (new threads and processes inherit their creator's): every
    # thread of this process gets it.
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, int(task.name)) < target:
                os.setpriority(os.PRIO_PROCESS, int(task.name), target)


def executor_backend(on_gpu: bool) -> str:
    """vLLM's executor of a multi-device engine. On GPUs ``ray``: its workers are Ray actors placed
    in the replica's placement group, one per GPU bundle (as Ray Serve LLM runs them). On a CPU
    ``mp``: vLLM's CPU backend runs one worker process per tensor-parallel rank."""
    return "ray" if on_gpu else "mp"


def build_vllm_config(config: GeneratorModelConfig, on_gpu: bool, placement_group: Any = None) -> Any:
    """vLLM's ``VllmConfig`` for a model; Ray workers go into ``placement_group`` (the replica's)."""
    vllm_config = build_engine_args(config, on_gpu).create_engine_config()
    parallel = vllm_config.parallel_config
    if placement_group is not None and parallel.distributed_executor_backend == "ray":
        parallel.placement_group = placement_group
    return vllm_config


def to_sampling_params(params: GenerationParams) -> Any:
    """vLLM ``SamplingParams`` (delta streaming) for validated generation parameters."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    if params.json_schema is not None:
        structured = StructuredOutputsParams(json=params.json_schema, disable_any_whitespace=True)
    elif params.json_object:
        structured = StructuredOutputsParams(json_object=True, disable_any_whitespace=True)
    return SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        max_tokens=params.max_tokens,
        stop=params.stop or None,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        repetition_penalty=params.repetition_penalty,
        min_tokens=params.min_tokens,
        ignore_eos=params.ignore_eos,
        logprobs=params.logprobs,
        prompt_logprobs=params.prompt_logprobs,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA,
    )


def token_logprobs(step_logprobs: list[dict[int, Any]] | None, token_ids: list[int], top: int) -> list[TokenLogprob] | None:
    """OpenAI-style log probabilities of the tokens of one delta."""
    if step_logprobs is None:
        return None
    entries = []
    for token_id, candidates in zip(token_ids, step_logprobs):
        chosen = candidates[token_id]
        ranked = sorted(candidates.items(), key=lambda item: item[1].rank or 0)
        alternatives = [_top_logprob(tid, lp) for tid, lp in ranked if (lp.rank or 0) <= top][:top]
        entries.append(TokenLogprob(
            token=_token_text(token_id, chosen),
            logprob=_finite(chosen.logprob),
            bytes=list(_token_text(token_id, chosen).encode()),
            top_logprobs=alternatives,
        ))
    return entries


def prompt_logprobs_of(candidates: Any) -> PromptLogprobs:
    """vLLM's prompt log probabilities (None at the first position) as wire data."""
    return [None if not position else {
        str(token_id): PromptLogprob(logprob=_finite(lp.logprob), rank=lp.rank, decoded_token=lp.decoded_token)
        for token_id, lp in position.items()} for position in candidates]


def prompt_token_strs(prompt_token_ids: list[int], logprobs: PromptLogprobs, tokenizer: Any) -> list[str]:
    """Each prompt token's text: vLLM's decoded token, the first one decoded here (vLLM has none)."""
    texts = []
    for index, token_id in enumerate(prompt_token_ids):
        position = logprobs[index] if index < len(logprobs) else None
        entry = position.get(str(token_id)) if position else None
        texts.append(entry.decoded_token if entry and entry.decoded_token is not None
                     else tokenizer.decode([token_id]))
    return texts


def _top_logprob(token_id: int, logprob: Any) -> TopLogprob:
    text = _token_text(token_id, logprob)
    return TopLogprob(token=text, logprob=_finite(logprob.logprob), bytes=list(text.encode()))


def _token_text(token_id: int, logprob: Any) -> str:
    return logprob.decoded_token if logprob.decoded_token is not None else f"token_id:{token_id}"


def _finite(value: float) -> float:
    return max(value, -9999.0)


class GeneratorEngine:
    """One vLLM model behind an async streaming interface."""

    def __init__(self, config: GeneratorModelConfig, on_gpu: bool = False, placement_group: Any = None) -> None:
        """``placement_group``: the replica's (a multi-device replica on GPUs puts its workers there)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        check_tool_parser(config.tool_call_parser)
        vllm_config = build_vllm_config(config, on_gpu, placement_group)
        self.cache_counts = PrefixCacheCounts()
        loggers = [counting_logger(self.cache_counts)] if config.cache_stats else None
        self.engine = AsyncLLM.from_vllm_config(vllm_config, disable_log_stats=True, stat_loggers=loggers)
        self.last_output_at = 0.0  # monotonic time of the last output of any request

    async def generate(
        self, prompt_token_ids: list[int], params: GenerationParams, request_id: str | None = None,
        lora_request: Any = None,
    ) -> AsyncIterator[GenerationResult]:
        """Stream the outputs of one prompt; closing the iterator aborts the engine request.
        ``lora_request``: vLLM's ``LoRARequest`` of the adapter to generate with (None: the base)."""
        from vllm.inputs import TokensPrompt

        request_id = request_id or uuid.uuid4().hex
        check_prompt_logprobs(params, self.config, "prompt_logprobs")  # a Python handle's call too
        try:
            sampling = to_sampling_params(params)
        except Exception as exc:  # noqa: BLE001 - vLLM's own parameter checks
            raise self._map_error(exc) from None
        stream = self.engine.generate(
            TokensPrompt(prompt_token_ids=prompt_token_ids), sampling, request_id, lora_request=lora_request
        )
        completion_tokens = 0
        tool_calls: dict[int, ToolCalls | None] = {}
        first = True
        try:
            async for output in stream:
                self.last_output_at = time.monotonic()
                chunks = [self._with_tool_calls(self._chunk(c, params), params, tool_calls)
                          for c in output.outputs]
                completion_tokens += sum(len(c.token_ids) for c in chunks)
                result = GenerationResult(
                    chunks=chunks,
                    prompt_tokens=len(prompt_token_ids),
                    completion_tokens=completion_tokens,
                )
                if first:
                    self._add_prompt(result, output, prompt_token_ids, params)
                    first = False
                yield result
        except Exception as exc:  # noqa: BLE001 - mapped to the service's errors
            raise self._map_error(exc) from None
        finally:
            await stream.aclose()

    def _with_tool_calls(self, chunk: GenerationChunk, params: GenerationParams,
                         parsers: dict[int, ToolCalls | None]) -> GenerationChunk:
        """The chunk's text as content and tool calls, when the request has tools."""
        if params.tool_mode is None:
            return chunk
        if chunk.index not in parsers:
            parsers[chunk.index] = tool_calls_for(params, self.engine.tokenizer)
        parser = parsers[chunk.index]
        return parser.apply(chunk) if parser is not None else chunk

    def _add_prompt(self, result: GenerationResult, output: Any, prompt_token_ids: list[int],
                    params: GenerationParams) -> None:
        """The prompt's log probabilities and text on the first result, when asked for (echo)."""
        if params.prompt_logprobs is not None and output.prompt_logprobs is not None:
            result.prompt_logprobs = prompt_logprobs_of(output.prompt_logprobs)
            result.prompt_token_ids = list(prompt_token_ids)
        if params.echo:
            tokenizer = self.engine.tokenizer
            result.prompt_text = tokenizer.decode(prompt_token_ids)
            result.prompt_token_strs = prompt_token_strs(prompt_token_ids, result.prompt_logprobs or [], tokenizer)

    @staticmethod
    def _chunk(completion: Any, params: GenerationParams) -> GenerationChunk:
        token_ids = list(completion.token_ids)
        logprobs = None
        if params.logprobs is not None:
            logprobs = token_logprobs(completion.logprobs, token_ids, params.logprobs)
        finish = completion.finish_reason
        return GenerationChunk(
            index=completion.index,
            text=completion.text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish if finish in (None, "stop", "length", "abort") else "stop",
            stop_reason=completion.stop_reason if isinstance(completion.stop_reason, str) else None,
        )

    @staticmethod
    def _map_error(exc: Exception) -> Exception:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "EngineDeadError" in names:
            return ServiceUnavailableError("The generation engine died; the replica is restarting.")
        if names & {"VLLMValidationError", "VLLMClientError", "ValueError"}:
            return InvalidRequestError(str(exc))
        return EngineError("The generation engine failed on this request.")

    async def ping(self) -> None:
        """Health: the engine loop is alive and doing work.

        A busy engine proves it by its recent output: a probe would queue behind the running
        requests, and under heavy load it could outlast Serve's health-check timeout and get a
        healthy replica killed with its streams. An idle (or stalled) engine must complete a
        one-token greedy generation.
        """
        await self.engine.check_health()
        if self.busy_and_progressing():
            return
        params = GenerationParams(temperature=0.0, max_tokens=1)
        async for _ in self.generate([1], params):
            pass

    def busy_and_progressing(self) -> bool:
        """Requests are running and one of them produced output within ``PROGRESS_PROOF_S``."""
        running = self.engine.get_num_unfinished_requests() > 0
        return running and time.monotonic() - self.last_output_at < PROGRESS_PROOF_S

    def is_dead(self) -> bool:
        return bool(self.engine.errored)

    def shutdown(self) -> None:
        self.engine.shutdown()
