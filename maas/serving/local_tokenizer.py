"""The tokenizer handle of the ingress, with the generation path's calls made in-process.

A chat or completion request used to make two Ray hops before its first token: ingress →
tokenizer deployment (token ids), then ingress → generator. :class:`InProcessTokenizer` stands
in for the tokenizer deployment's handle at the ingress: :attr:`InProcessTokenizer.prompts`
tokenizes the generators' prompts here, with the same HF fast tokenizers, chat templates and
checks (:class:`~maas.engines.tokenizer.PromptTokenizer`); every handle call (``/v1/tokenize``,
``/v1/detokenize``, the health check) still goes to the deployment.

Rendering a chat template and encoding a short prompt take well under a millisecond, against
several milliseconds of CPU for a Ray hop on a 2-core machine (benchmarks/overhead.py).

The ingress calls :attr:`InProcessTokenizer.prompts` directly, in its preparation thread pool
(:mod:`maas.serving.preparation`): a long prompt or template must not hold up its event loop.
"""

from __future__ import annotations

from typing import Any

from maas.engines.tokenizer import PromptTokenizer, TokenizerEngine, TokenizerSpec


class InProcessTokenizer:
    """The tokenizer deployment's handle, with the prompts of ``specs`` tokenized locally (``prompts``)."""

    def __init__(self, handle: Any, specs: list[TokenizerSpec], prompts: PromptTokenizer | None = None) -> None:
        self.handle = handle
        self.prompts = prompts or PromptTokenizer(TokenizerEngine(specs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)
