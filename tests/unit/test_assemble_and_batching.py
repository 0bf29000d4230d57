"""Streaming assembly and batch grouping are plain functions, tested alone."""

import asyncio

from maas.endpoints.generation.assemble import (
    chat_chunks,
    chat_response,
    completion_response,
    merge_results,
    merge_streams,
)
from maas.protocol.chat import GenerationChunk, GenerationResult
from maas.serving.request_batching import run_grouped


def _results() -> list[GenerationResult]:
    return [
        GenerationResult(chunks=[GenerationChunk(index=0, text="Hel", token_ids=[1])], prompt_tokens=5, completion_tokens=1),
        GenerationResult(chunks=[GenerationChunk(index=0, text="lo", token_ids=[2])], prompt_tokens=5, completion_tokens=2),
        GenerationResult(chunks=[GenerationChunk(index=0, text="!", token_ids=[3], finish_reason="stop")],
                         prompt_tokens=5, completion_tokens=3),
    ]


async def _aiter(items):
    for item in items:
        yield item


def test_stream_concatenates_to_the_whole_answer() -> None:
    whole = chat_response("m", merge_results(_results()))

    async def collect():
        return [c async for c in chat_chunks("id", 0, "m", _aiter(_results()), include_usage=False)]

    chunks = asyncio.run(collect())
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content == "Hello!"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens == 8


def test_include_usage_adds_a_final_usage_chunk() -> None:
    async def collect():
        return [c async for c in chat_chunks("id", 0, "m", _aiter(_results()), include_usage=True)]

    chunks = asyncio.run(collect())
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_completion_choices_are_numbered_per_prompt_and_n() -> None:
    result = merge_results(_results())
    response = completion_response("m", [result, result], n=1)
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage.prompt_tokens == 10


def test_merge_streams_interleaves_and_tags() -> None:
    async def collect():
        return [item async for item in merge_streams([_aiter([1, 2]), _aiter([3])])]

    items = asyncio.run(collect())
    assert sorted(items) == [(0, 1), (0, 2), (1, 3)]


def test_run_grouped_calls_once_per_model_and_keeps_order() -> None:
    calls = []

    def run(model, inputs):
        calls.append((model, len(inputs)))
        return [f"{model}:{x}" for x in inputs]

    items = [("a", 1), ("b", 2), ("a", 3), ("a", 4)]
    assert run_grouped(items, run, max_batch_size=2) == ["a:1", "b:2", "a:3", "a:4"]
    assert sorted(calls) == [("a", 1), ("a", 2), ("b", 1)]
