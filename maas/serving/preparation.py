"""CPU-heavy request preparation off the ingress's event loop.

An ingress replica answers every request on one event loop. Preparing a generation request can
take it for a long time: rendering the chat template and tokenizing a prompt of up to 4 MiB,
compiling the JSON schemas and grammars of up to 128 tools or of a ``response_format``, reading
a Batch API input file of up to ``max_file_bytes``. Run on the loop, one such request delays every
other request of the replica, streams included. :class:`PreparationPool` runs that work in a
small thread pool owned by the replica, so the loop goes on answering meanwhile.

What is cheap is checked on the loop first, before a thread is used: the body size (the request
guard), the size limits of the wire schemas (message and tool counts), the model (a 404), the
request budget by its fields (``ingress.limits``: sequences, tools, schema size;
:mod:`maas.endpoints.generation.budget`), and a prompt far too long for the context (its length against the
model's longest token: a 4 MiB prompt is refused without tokenizing it). The budget's token
counts (tokens to generate, tokens in all, log probabilities) are checked in the thread, right
after tokenizing. A thread runs to the end even if its request is cancelled; the pool's size
bounds how many run at once, and the rest wait in its queue.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

PREPARE_THREADS = 4
"""Threads of one replica's pool: tokenizers release the GIL while they encode, so a few threads
use the replica's CPUs without starving its event loop."""


class PreparationPool:
    """A bounded thread pool for the request preparation of one ingress replica."""

    def __init__(self, threads: int = PREPARE_THREADS) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="maas-prepare")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in the pool; its exception (e.g. a 400) is raised here."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(work, *args))
