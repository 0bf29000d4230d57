"""Tokenizer engine: HF fast tokenizers of every served model (plain Python, no Serve)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maas.generation_rules.tools import hermes_messages, template_knows_tools
from maas.protocol.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from maas.storage.embedded import resolve_model_path
from maas.storage.registry import REGISTRY_PREFIX, ModelRegistry


@dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer to load for a model, and that model's context length."""

    name: str
    path: str
    max_model_len: int
    registry_dir: str | None = None


class TokenizerEngine:
    """Tokenize prompts or chat messages, detokenize ids, for several models at once."""

    def __init__(self, specs: list[TokenizerSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.tokenizers: dict[str, Any] = {}
        self._longest: dict[str, int] = {}
        for spec in specs:
            if not self._is_untrained(spec):  # a registry model still training: loaded when live
                self.tokenizers[spec.name] = _load_fast(spec)

    def max_model_len(self, model: str) -> int:
        return self.specs[model].max_model_len

    def tokenizer(self, model: str) -> Any:
        """The model's tokenizer; a registry model's is loaded once it has a live version."""
        tokenizer = self.tokenizers.get(model)
        if tokenizer is None:
            if self._is_untrained(self.specs[model]):
                raise ModelNotReadyError(f"The model '{model}' has no live version yet (training).",
                                         retry_after_s=30)
            tokenizer = self.tokenizers[model] = _load_fast(self.specs[model])
        return tokenizer

    def longest_token_chars(self, model: str) -> int:
        """The most characters one token of ``model`` stands for (its longest vocabulary entry; a
        byte-level entry's characters are bytes, so it covers at most that many characters)."""
        longest = self._longest.get(model)
        if longest is None:
            longest = self._longest[model] = max(map(len, self.tokenizer(model).get_vocab()), default=1)
        return longest

    @staticmethod
    def _is_untrained(spec: TokenizerSpec) -> bool:
        if not spec.path.startswith(REGISTRY_PREFIX):
            return False
        registry = ModelRegistry(spec.registry_dir)
        return registry.live_version(spec.path.removeprefix(REGISTRY_PREFIX)) is None

    def encode(self, model: str, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of a text prompt."""
        return list(self.tokenizer(model).encode(text, add_special_tokens=add_special_tokens))

    def encode_chat(
        self,
        model: str,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        add_special_tokens: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Token ids of chat messages rendered with the model's chat template; ``tools`` and tool
        messages go to a template that renders them, else they are written in the Hermes format."""
        tokenizer = self.tokenizer(model)
        if not tokenizer.chat_template:
            raise InvalidRequestError(f"The model '{model}' has no chat template.", "messages")
        if template_knows_tools(tokenizer.chat_template):
            options: dict[str, Any] = {"tools": tools} if tools else {}
        else:
            messages, options = hermes_messages(messages, tools), {}
        text = tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False, **options
        )
        return self.encode(model, text, add_special_tokens=add_special_tokens)

    def decode(self, model: str, token_ids: list[int]) -> str:
        """Text of token ids; ids outside the vocabulary are a 400."""
        tokenizer = self.tokenizer(model)
        vocab_size = len(tokenizer)
        bad = next((t for t in token_ids if t < 0 or t >= vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"Token id {bad} is outside the vocabulary (size {vocab_size}).", "tokens"
            )
        return tokenizer.decode(token_ids)

    def token_strings(self, model: str, token_ids: list[int]) -> list[str]:
        """The vocabulary string of each token id."""
        return list(self.tokenizer(model).convert_ids_to_tokens(token_ids))

    def ping(self) -> None:
        """A tiny real call of every tokenizer (the health check)."""
        for name in list(self.tokenizers):
            self.encode(name, "ping")


class PromptTokenizer:
    """Prompts and chat messages to checked token ids: what a generation request needs.

    Used by the tokenizer deployment and, for the generators' models, in the ingress itself
    (:mod:`maas.serving.local_tokenizer`), so that a chat or completion request makes no Ray hop before
    it reaches its generator.
    """

    def __init__(self, engine: TokenizerEngine) -> None:
        self.engine = engine

    def require(self, model: str) -> None:
        if model not in self.engine.specs:
            raise ModelNotFoundError.for_model(model, "tokenization", list(self.engine.specs))

    def check_size(self, model: str, texts: list[str], param: str) -> None:
        """A 400 before any tokenizing for text far too long for the context: even if each token
        stood for the model's longest vocabulary entry, it would need more than twice
        ``max_model_len`` tokens. Cheap (a length), so a 4 MiB prompt costs no tokenizer time."""
        self.require(model)
        chars, limit = sum(map(len, texts)), self.engine.max_model_len(model)
        if chars > 2 * limit * self.engine.longest_token_chars(model):
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens; the prompt has {chars} "
                "characters, far more than fit in it.", param)

    def prompt_ids(self, model: str, prompt: str | list[int], param: str = "prompt") -> list[int]:
        """Token ids of a completion prompt, checked against the model's context."""
        self.require(model)
        if isinstance(prompt, str):
            ids = self.engine.encode(model, prompt)
        else:
            self.engine.decode(model, prompt)  # validates every id
            ids = list(prompt)
        return self.checked(model, ids, param)

    def chat_ids(self, model: str, messages: list[Any], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of chat messages (``ChatMessage``s, with the chat template and ``tools``), checked."""
        self.require(model)
        ids = self.engine.encode_chat(model, [m.for_template() for m in messages], tools=tools)
        return self.checked(model, ids, "messages")

    def checked(self, model: str, ids: list[int], param: str) -> list[int]:
        limit = self.engine.max_model_len(model)
        if len(ids) >= limit:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens; the prompt has "
                f"{len(ids)} tokens, leaving no room for the completion.",
                param,
            )
        if not ids:
            raise InvalidRequestError("The prompt is empty.", param)
        return ids


def _load_fast(spec: TokenizerSpec) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(spec.path, registry_dir=spec.registry_dir)))
    if not tokenizer.is_fast:
        raise ValueError(f"{spec.name}: maas serves fast tokenizers only")
    return tokenizer
