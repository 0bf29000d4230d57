"""Tallies gathered on an ingress replica's event loop and written to the registry in batches:
what shadow traffic (:mod:`maas.serving.shadow`) and canaries (:mod:`maas.serving.canary`) share.

An added tally is merged into the key's unsaved one; the first add after a write schedules the
next, ``persist_every_s`` later, so a busy replica writes each key about once a period, never once
per request. The write is blocking (a locked read-modify-write of a registry file): it runs in a
thread. A failed write is logged and its tally kept for the next write; a successful one's result
goes to ``written(key, result)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K")
T = TypeVar("T")


class TallyWriter(Generic[K, T]):
    """``write(key, tally)`` in a thread about every ``persist_every_s``; ``merge(a, b)`` sums two
    tallies; ``what`` names them in the log line of a failed write."""

    def __init__(self, write: Callable[[K, T], Any], merge: Callable[[T, T], T], what: str,
                 persist_every_s: float, written: Callable[[K, Any], None] | None = None) -> None:
        self.write = write
        self.merge = merge
        self.what = what
        self.persist_every_s = persist_every_s
        self.written = written
        self._unsaved: dict[K, T] = {}
        self._scheduled = False
        self._writer: asyncio.Task[None] | None = None

    def add(self, key: K, tally: T) -> None:
        """Merge ``tally`` into the key's unsaved one and schedule a write (call from the loop)."""
        self._keep(key, tally)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.persist_every_s, self._start)

    async def drain(self) -> None:
        """Wait for a write under way, then write what is left (tests, shutdown)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._persist()

    def _keep(self, key: K, tally: T) -> None:
        unsaved = self._unsaved.get(key)
        self._unsaved[key] = tally if unsaved is None else self.merge(unsaved, tally)

    def _start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._persist())

    async def _persist(self) -> None:
        self._scheduled = False
        unsaved, self._unsaved = self._unsaved, {}
        loop = asyncio.get_running_loop()
        for key, tally in unsaved.items():
            try:
                result = await loop.run_in_executor(None, self.write, key, tally)
            except Exception:  # noqa: BLE001 - kept and retried with the next tallies
                logger.warning("could not store %s of %s", self.what, getattr(key, "model", key), exc_info=True)
                self._keep(key, tally)
                continue
            if self.written is not None:
                self.written(key, result)
