"""Tokenizer deployment: tokenize once, for every served model."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.health import EngineHealth, HealthCache
from maas.endpoints.encoding.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from maas.engines.tokenizer import PromptTokenizer, TokenizerEngine, TokenizerSpec
from maas.protocol.chat import ChatMessage
from maas.protocol.errors import log_client_errors_as_one_line


@serve.deployment(name="tokenizer")
class TokenizerDeployment(EngineHealth):
    """HF fast tokenizers of every served model; chat templates; context-length checks."""

    def __init__(self, specs: list[TokenizerSpec]) -> None:
        self.engine = TokenizerEngine(specs)
        self.prompts = PromptTokenizer(self.engine)
        self.health = HealthCache()
        log_client_errors_as_one_line()

    def _require(self, model: str) -> None:
        self.prompts.require(model)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """``/v1/tokenize``: a prompt or chat messages to token ids."""
        self._require(request.model)
        if request.messages is not None:
            ids = self.engine.encode_chat(
                request.model,
                [m.for_template() for m in request.messages],
                request.add_generation_prompt,
                request.special_tokens(),
            )
        else:
            ids = self.engine.encode(request.model, request.prompt or "", request.special_tokens())
        strs = self.engine.token_strings(request.model, ids) if request.return_token_strs else None
        return TokenizeResponse(
            count=len(ids),
            max_model_len=self.engine.max_model_len(request.model),
            tokens=ids,
            token_strs=strs,
        )

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        """``/v1/detokenize``: token ids to text."""
        self._require(request.model)
        return DetokenizeResponse(prompt=self.engine.decode(request.model, request.tokens))

    def prompt_ids(self, model: str, prompt: str | list[int], param: str = "prompt") -> list[int]:
        """Token ids of a completion prompt, checked against the model's context."""
        return self.prompts.prompt_ids(model, prompt, param)

    def chat_ids(self, model: str, messages: list[ChatMessage],
                 tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of chat messages (with the chat template and ``tools``), checked against the context."""
        return self.prompts.chat_ids(model, messages, tools)
