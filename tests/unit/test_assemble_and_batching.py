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


def test_a_lone_small_forward_call_may_get_more_threads() -> None:
    from maas.config.models import BatchingOptions

    options = BatchingOptions(torch_threads=1, low_load_torch_threads=4, low_load_max_texts=8)
    assert options.threads_for(texts=1, pending_texts=1) == 4  # one request in the replica
    assert options.threads_for(texts=8, pending_texts=8) == 4
    assert options.threads_for(texts=1, pending_texts=3) == 1  # others wait: busy
    assert options.threads_for(texts=9, pending_texts=9) == 1  # a large call: busy
    assert BatchingOptions(torch_threads=2, low_load_torch_threads=2).threads_for(1, 1) == 2  # off
    assert BatchingOptions().threads_for(1, 1) == 1  # off by default


def test_torch_threads_are_set_in_the_calling_thread() -> None:
    """OpenMP's thread count is per thread: the forward's thread sets its own."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from maas.engines.encoders import use_torch_threads

    def threads_after(count: int) -> int:
        use_torch_threads(count)
        return torch.get_num_threads()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(threads_after, 1).result() == 1
        assert pool.submit(threads_after, 2).result() == 2
        assert pool.submit(threads_after, 1).result() == 1
