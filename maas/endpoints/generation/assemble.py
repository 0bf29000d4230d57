"""Turn the generator's :class:`GenerationResult` stream into OpenAI responses and chunks.

Plain functions over plain data, shared by chat and completions, streamed or not, so that a
streamed answer is by construction the concatenation of the same deltas as the full one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from maas.endpoints.generation.protocol import CompletionChoice, CompletionLogprobs, CompletionResponse
from maas.generation_rules.tools import merge_tool_calls, new_call_id
from maas.protocol.base import UsageInfo
from maas.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    FinishReason,
    FunctionCall,
    GenerationChunk,
    GenerationResult,
    ResponseMessage,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
)

T = TypeVar("T")


@dataclass
class ChoiceState:
    """Everything generated so far for one choice."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason = None
    stop_reason: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    def add(self, chunk: GenerationChunk) -> None:
        self.text += chunk.text
        self.token_ids.extend(chunk.token_ids)
        if chunk.tool_calls:
            self.tool_calls = merge_tool_calls(self.tool_calls or [], chunk.tool_calls)
        if chunk.logprobs is not None:
            self.logprobs = (self.logprobs or []) + chunk.logprobs
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.stop_reason = chunk.stop_reason


@dataclass
class Collected:
    """A whole generation: the choices of every prompt and the token counts."""

    choices: dict[int, ChoiceState] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, result: GenerationResult, index_offset: int = 0) -> None:
        for chunk in result.chunks:
            self.choices.setdefault(chunk.index + index_offset, ChoiceState()).add(chunk)

    def usage(self) -> UsageInfo:
        return UsageInfo.of(self.prompt_tokens, self.completion_tokens)


def merge_results(results: list[GenerationResult]) -> GenerationResult:
    """One result holding the concatenation of a stream of results (for non-streamed calls)."""
    collected = Collected()
    for result in results:
        collected.add(result)
    chunks = [
        GenerationChunk(
            index=index,
            text=state.text,
            token_ids=state.token_ids,
            logprobs=state.logprobs,
            finish_reason=state.finish_reason,
            stop_reason=state.stop_reason,
            tool_calls=state.tool_calls,
        )
        for index, state in sorted(collected.choices.items())
    ]
    last = results[-1] if results else None
    prompt = results[0].model_dump(include=PROMPT_FIELDS) if results else {}
    return GenerationResult(
        chunks=chunks,
        prompt_tokens=last.prompt_tokens if last else 0,
        completion_tokens=last.completion_tokens if last else 0,
        **prompt,
    )


PROMPT_FIELDS = {"prompt_token_ids", "prompt_logprobs", "prompt_text", "prompt_token_strs"}
"""What only a generation's first result carries (echo)."""


# ----------------------------------------------------------------------------- chat


def chat_response(model: str, result: GenerationResult) -> ChatCompletionResponse:
    """The non-streamed chat answer of a merged generation result."""
    choices = [
        ChatChoice(
            index=chunk.index,
            message=response_message(chunk),
            logprobs=ChatLogprobs(content=chunk.logprobs) if chunk.logprobs is not None else None,
            finish_reason=chunk.finish_reason,
            stop_reason=chunk.stop_reason,
        )
        for chunk in result.chunks
    ]
    usage = UsageInfo.of(result.prompt_tokens, result.completion_tokens)
    return ChatCompletionResponse(model=model, choices=choices, usage=usage)


def response_message(chunk: GenerationChunk) -> ResponseMessage:
    """A whole answer's message: its text, or its tool calls (and any text before them)."""
    if not chunk.tool_calls:
        return ResponseMessage(content=chunk.text)
    calls = [ToolCall(id=call.id or new_call_id(), function=FunctionCall(
        name=call.function.name or "", arguments=call.function.arguments or "")) for call in chunk.tool_calls]
    return ResponseMessage(content=chunk.text or None, tool_calls=calls)


def chat_chunk(
    response_id: str, created: int, model: str, chunk: GenerationChunk, first: bool
) -> ChatCompletionChunk:
    """One streamed chat chunk for one choice's delta."""
    content = None if chunk.tool_calls and not chunk.text else chunk.text
    delta = ChatDelta(role="assistant" if first else None, content=content, tool_calls=chunk.tool_calls)
    logprobs = ChatLogprobs(content=chunk.logprobs) if chunk.logprobs is not None else None
    choice = ChatChunkChoice(index=chunk.index, delta=delta, logprobs=logprobs,
                             finish_reason=chunk.finish_reason, stop_reason=chunk.stop_reason)
    return ChatCompletionChunk(id=response_id, created=created, model=model, choices=[choice])


async def chat_chunks(
    response_id: str,
    created: int,
    model: str,
    results: AsyncIterator[GenerationResult],
    include_usage: bool,
) -> AsyncIterator[ChatCompletionChunk]:
    """Streamed chat chunks; usage rides on the last chunk, or in its own chunk if asked for.

    Each chunk goes out as soon as it arrives; only a chunk that finishes a choice waits for the
    next one (it may be the last, which carries the usage): holding back every chunk by one
    delayed the first token by a whole stream interval (benchmarks/results/OVERHEAD.md).
    """
    started: set[int] = set()
    held: ChatCompletionChunk | None = None
    usage = UsageInfo()
    async for result in results:
        usage = UsageInfo.of(result.prompt_tokens, result.completion_tokens)
        for chunk in result.chunks:
            if not chunk.text and not chunk.tool_calls and chunk.finish_reason is None and chunk.index in started:
                continue
            out = chat_chunk(response_id, created, model, chunk, chunk.index not in started)
            started.add(chunk.index)
            if held is not None:
                yield held
                held = None
            if chunk.finish_reason is None:
                yield out
            else:
                held = out
    if not include_usage:
        if held is None:
            held = ChatCompletionChunk(id=response_id, created=created, model=model, choices=[])
        held.usage = usage
    if held is not None:
        yield held
    if include_usage:
        yield ChatCompletionChunk(id=response_id, created=created, model=model, choices=[], usage=usage)


# ----------------------------------------------------------------------------- completions


def completion_logprobs(entries: list[TokenLogprob] | None, text_start: int = 0) -> CompletionLogprobs | None:
    """Legacy completions log probabilities (tokens, token_logprobs, top_logprobs, offsets)."""
    if entries is None:
        return None
    result = CompletionLogprobs()
    offset = text_start
    for entry in entries:
        result.tokens.append(entry.token)
        result.token_logprobs.append(entry.logprob)
        result.top_logprobs.append({alt.token: alt.logprob for alt in entry.top_logprobs} or None)
        result.text_offset.append(offset)
        offset += len(entry.token)
    return result


def completion_choice(chunk: GenerationChunk, index: int, text_start: int = 0) -> CompletionChoice:
    return CompletionChoice(
        index=index,
        text=chunk.text,
        logprobs=completion_logprobs(chunk.logprobs, text_start),
        finish_reason=chunk.finish_reason,
    )


def completion_response(model: str, results: list[GenerationResult], n: int) -> CompletionResponse:
    """The non-streamed answer of one merged result per prompt (choice index = prompt × n + i)."""
    choices = [
        completion_choice(chunk, prompt_index * n + chunk.index)
        for prompt_index, result in enumerate(results)
        for chunk in result.chunks
    ]
    usage = UsageInfo.of(
        sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
    )
    return CompletionResponse(model=model, choices=choices, usage=usage)


async def completion_chunks(
    response_id: str,
    created: int,
    model: str,
    streams: list[AsyncIterator[GenerationResult]],
    n: int,
    include_usage: bool,
) -> AsyncIterator[CompletionResponse]:
    """Streamed completion chunks of several prompts, interleaved as they arrive.

    As in :func:`chat_chunks`, only a chunk that finishes a choice waits for the next one.
    """
    counts: dict[int, tuple[int, int]] = {}
    offsets: dict[int, int] = {}
    held: CompletionResponse | None = None
    async for prompt_index, result in merge_streams(streams):
        counts[prompt_index] = (result.prompt_tokens, result.completion_tokens)
        for chunk in result.chunks:
            if not chunk.text and chunk.finish_reason is None:
                continue
            index = prompt_index * n + chunk.index
            choice = completion_choice(chunk, index, offsets.get(index, 0))
            offsets[index] = offsets.get(index, 0) + len(chunk.text)
            out = CompletionResponse(id=response_id, created=created, model=model, choices=[choice])
            if held is not None:
                yield held
                held = None
            if chunk.finish_reason is None:
                yield out
            else:
                held = out
    usage = UsageInfo.of(sum(p for p, _ in counts.values()), sum(c for _, c in counts.values()))
    if not include_usage:
        if held is None:
            held = CompletionResponse(id=response_id, created=created, model=model, choices=[])
        held.usage = usage
    if held is not None:
        yield held
    if include_usage:
        yield CompletionResponse(id=response_id, created=created, model=model, choices=[], usage=usage)


async def merge_streams(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async iterators as they arrive, tagged with the iterator's index."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, T] | tuple[int, BaseException] | None] = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
            await queue.put((index, done))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()  # type: ignore[misc]
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
