"""The tokenizer handle of the ingress, with the generation path's calls made in-process.

A chat or completion request used to make two Ray hops before its first token: ingress →
tokenizer deployment (token ids), then ingress → generator. :class:`InProcessTokenizer` stands
in for the tokenizer deployment's handle at the ingress: ``chat_ids`` and ``prompt_ids`` for the
generators' models run here, with the same HF fast tokenizers, chat templates and checks
(:class:`~maas.engines.tokenizer.PromptTokenizer`); every other call (``/v1/tokenize``,
``/v1/detokenize``, the health check, models the ingress has no tokenizer for) still goes to
the deployment. Both forms are awaited the same way (``await handle.chat_ids.remote(...)``).

Rendering a chat template and encoding a short prompt take well under a millisecond, against
several milliseconds of CPU for a Ray hop on a 2-core machine (benchmarks/overhead.py).

The ingress calls :attr:`InProcessTokenizer.prompts` directly, in its preparation thread pool
(:mod:`maas.preparation`): a long prompt or template must not hold up its event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maas.engines.tokenizer import PromptTokenizer, TokenizerEngine, TokenizerSpec


class _Method:
    """``.remote(*args)`` of a handle method: the local call when it has the model, else the handle's."""

    def __init__(self, local: Callable[..., list[int]], remote: Any, models: set[str]) -> None:
        self.local, self.handle_method, self.models = local, remote, models

    def remote(self, model: str, *args: Any) -> Any:
        if model not in self.models:
            return self.handle_method.remote(model, *args)
        return self._call(model, *args)

    async def _call(self, model: str, *args: Any) -> list[int]:
        return self.local(model, *args)


class InProcessTokenizer:
    """The tokenizer deployment's handle, with ``chat_ids`` / ``prompt_ids`` local for ``specs``."""

    def __init__(self, handle: Any, specs: list[TokenizerSpec], prompts: PromptTokenizer | None = None) -> None:
        self.handle = handle
        self.prompts = prompts or PromptTokenizer(TokenizerEngine(specs))
        models = {spec.name for spec in specs}
        self.chat_ids = _Method(self.prompts.chat_ids, handle.chat_ids, models)
        self.prompt_ids = _Method(self.prompts.prompt_ids, handle.prompt_ids, models)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)
