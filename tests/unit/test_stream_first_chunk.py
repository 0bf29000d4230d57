"""The first streamed chunk leaves as soon as the generator sends it (no one-chunk hold-back)."""

from __future__ import annotations

import asyncio

from maas.endpoints.generation.assemble import chat_chunks, completion_chunks
from maas.protocol.chat import GenerationChunk, GenerationResult


def results(sent: list[str]):  # noqa: ANN201
    async def gen():  # noqa: ANN202
        for i, (text, finish) in enumerate((("Hel", None), ("lo", None), ("!", "stop"))):
            sent.append(text)
            yield GenerationResult(chunks=[GenerationChunk(index=0, text=text, token_ids=[i], finish_reason=finish)],
                                   prompt_tokens=5, completion_tokens=i + 1)
    return gen()


def test_chat_chunks_go_out_as_they_arrive() -> None:
    async def main() -> None:
        sent: list[str] = []
        stream = chat_chunks("id", 0, "m", results(sent), include_usage=False)
        first = await anext(stream)
        assert first.choices[0].delta.content == "Hel" and sent == ["Hel"]
        rest = [c async for c in stream]
        assert [c.choices[0].delta.content for c in rest] == ["lo", "!"]
        assert rest[-1].usage.total_tokens == 8 and first.usage is None
    asyncio.run(main())


def test_completion_chunks_go_out_as_they_arrive() -> None:
    async def main() -> None:
        sent: list[str] = []
        stream = completion_chunks("id", 0, "m", [results(sent)], n=1, include_usage=True)
        first = await anext(stream)
        assert first.choices[0].text == "Hel" and sent == ["Hel"]
        rest = [c async for c in stream]
        assert [c.choices[0].text for c in rest[:-1]] == ["lo", "!"]
        assert rest[-1].choices == [] and rest[-1].usage.completion_tokens == 3
    asyncio.run(main())
