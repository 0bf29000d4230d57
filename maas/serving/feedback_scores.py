"""Both versions' accuracy on a registry classifier's labelled feedback: the promotion rule's
"beats the live version on feedback" (:mod:`maas.serving.promotion`).

The feedback (``POST /v1/feedback``, :func:`maas.storage.feedback.load_feedback`) is classified by
the live version and by the challenger through the ingress's own classify calls, the newest
``max_examples`` texts at most, in chunks. The rule is judged in a worker thread (under the canary's
lock), so :meth:`FeedbackScores.accuracy` hands the work to the ingress's event loop and waits for
it, bounded by ``timeout_s``; a pair's result is kept until its feedback changes. Any failure
means "no feedback evidence" (None), never a decision on half the data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from maas.serving.promotion import FeedbackAccuracy
from maas.storage.feedback import load_feedback

logger = logging.getLogger(__name__)

Classify = Callable[[str, list[str]], Awaitable[Sequence[Any]]]


class FeedbackScores:
    """One ingress replica's feedback accuracies, cached per (model, live, challenger)."""

    def __init__(self, registry: Any, classify: Classify, max_examples: int = 200, chunk: int = 64,
                 timeout_s: float = 60.0) -> None:
        self.registry = registry
        self.classify = classify
        self.max_examples = max_examples
        self.chunk = chunk
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cache: dict[tuple[str, str, str], tuple[int, FeedbackAccuracy | None]] = {}

    def bind_loop(self) -> None:
        """Remember the event loop the classify calls run on (call from it)."""
        self._loop = asyncio.get_running_loop()

    def accuracy(self, served: str, name: str, live: str, challenger: str) -> FeedbackAccuracy | None:
        """From a worker thread: both versions' accuracy on ``name``'s feedback (served as
        ``served``), or None without feedback, a loop, or on any failure."""
        if self._loop is None:
            return None
        work = asyncio.run_coroutine_threadsafe(self.score(served, name, live, challenger), self._loop)
        try:
            return work.result(self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - no evidence rather than a wrong one
            work.cancel()
            logger.warning("feedback accuracy of %s not computed: %s", name, type(exc).__name__)
            return None

    async def score(self, served: str, name: str, live: str, challenger: str) -> FeedbackAccuracy | None:
        """Classify the newest feedback texts with both versions (on the event loop)."""
        loop = asyncio.get_running_loop()
        examples = await loop.run_in_executor(None, load_feedback, self.registry, name)
        newest = examples[-self.max_examples:]
        key, seen = (served, live, challenger), hash(tuple(newest))
        cached = self._cache.get(key)
        if cached is not None and cached[0] == seen:
            return cached[1]
        result = None
        if newest:
            texts, gold = [text for text, _ in newest], [label for _, label in newest]
            live_labels = await self._labels(f"{served}/{live}", texts)
            challenger_labels = await self._labels(f"{served}/{challenger}", texts)
            result = FeedbackAccuracy(labels=len(newest), live_accuracy=_accuracy(live_labels, gold),
                                      challenger_accuracy=_accuracy(challenger_labels, gold))
        self._cache[key] = (seen, result)
        return result

    async def _labels(self, model_id: str, texts: list[str]) -> list[str]:
        labels: list[str] = []
        for start in range(0, len(texts), self.chunk):
            results = await self.classify(model_id, texts[start:start + self.chunk])
            labels += [result.label for result in results]
        return labels


def _accuracy(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
