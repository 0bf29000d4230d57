"""maas/serving/local_tokenizer.py: the generators' prompts are tokenized in the ingress, the rest remotely."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from maas.engines.tokenizer import PromptTokenizer, TokenizerSpec
from maas.protocol.errors import ContextLengthExceededError, InvalidRequestError
from maas.serving.local_tokenizer import InProcessTokenizer


class Engine:
    """A word-per-token stand-in for TokenizerEngine."""

    specs = {"gen": TokenizerSpec("gen", "/nowhere", 8)}

    def max_model_len(self, model: str) -> int:
        return self.specs[model].max_model_len

    def __init__(self) -> None:
        self.encoded = 0

    def longest_token_chars(self, model: str) -> int:
        return 3

    def encode(self, model: str, text: str, add_special_tokens: bool = True) -> list[int]:
        self.encoded += 1
        return [len(word) for word in text.split()]

    def encode_chat(self, model: str, messages: list[dict[str, str]], tools: Any = None) -> list[int]:
        return self.encode(model, " ".join(f"<{m['role']}> {m['content']}" for m in messages))

    def decode(self, model: str, ids: list[int]) -> str:
        if any(i < 0 for i in ids):
            raise InvalidRequestError("bad id", "tokens")
        return "x" * len(ids)


class Message:
    def __init__(self, role: str, content: str) -> None:
        self.role, self.content = role, content

    def for_template(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class RemoteMethod:
    def __init__(self, name: str, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.name, self.calls = name, calls

    def remote(self, *args: Any) -> Any:
        self.calls.append((self.name, args))

        async def answer() -> list[int]:
            return [-1]
        return answer()


class Handle:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.chat_ids = RemoteMethod("chat_ids", self.calls)
        self.prompt_ids = RemoteMethod("prompt_ids", self.calls)
        self.tokenize = RemoteMethod("tokenize", self.calls)


def tokenizer() -> tuple[InProcessTokenizer, Handle]:
    handle = Handle()
    return InProcessTokenizer(handle, list(Engine.specs.values()), PromptTokenizer(Engine())), handle  # type: ignore[arg-type]


def test_the_generators_prompts_are_tokenized_here() -> None:
    local, handle = tokenizer()

    assert local.prompts.prompt_ids("gen", "a bb ccc") == [1, 2, 3]
    assert local.prompts.prompt_ids("gen", [5, 6]) == [5, 6]
    assert local.prompts.chat_ids("gen", [Message("user", "hi there")]) == [6, 2, 5]
    assert handle.calls == []


def test_the_same_checks_as_the_deployment() -> None:
    local, _ = tokenizer()

    with pytest.raises(ContextLengthExceededError):
        local.prompts.prompt_ids("gen", "a " * 8)
    with pytest.raises(InvalidRequestError, match="empty"):
        local.prompts.prompt_ids("gen", "")
    with pytest.raises(InvalidRequestError):
        local.prompts.prompt_ids("gen", [-3])


def test_other_models_and_other_calls_go_to_the_deployment() -> None:
    local, handle = tokenizer()

    async def main() -> None:
        assert await local.prompt_ids.remote("other", "text") == [-1]
        assert await local.chat_ids.remote("other", []) == [-1]
        await local.tokenize.remote("request")
    asyncio.run(main())
    assert [name for name, _ in handle.calls] == ["prompt_ids", "chat_ids", "tokenize"]


def test_far_too_long_text_is_refused_without_tokenizing() -> None:
    engine = Engine()
    prompts = PromptTokenizer(engine)  # type: ignore[arg-type]
    prompts.check_size("gen", ["abc " * 6], "prompt")  # 24 chars could be 8 tokens of 3: tokenized later
    with pytest.raises(ContextLengthExceededError, match="characters"):
        prompts.check_size("gen", ["a" * 40, "b" * 9], "messages")  # 49 > 2 * 8 * 3
    assert engine.encoded == 0
