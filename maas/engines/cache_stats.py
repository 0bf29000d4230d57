"""vLLM's prefix-cache counters of one engine, read from its per-step stats (plain Python).

vLLM counts, per scheduler step, the prompt tokens it looked up in its prefix cache (*queries*)
and those it found there (*hits*); it reports them to its stat loggers only while stats are on.
:func:`counting_logger` is a stat logger that keeps the running totals in a
:class:`PrefixCacheCounts`; the generator deployment takes what was added since its last look
into the service's metrics (``maas_prefix_cache_*``).
"""

from __future__ import annotations

import threading
from typing import Any


class PrefixCacheCounts:
    """Prompt tokens looked up in, and found in, the prefix cache since the last :meth:`take`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queries = 0
        self.hits = 0

    def add(self, queries: int, hits: int) -> None:
        with self._lock:
            self.queries += queries
            self.hits += hits

    def take(self) -> tuple[int, int]:
        """``(queries, hits)`` since the last call, and reset."""
        with self._lock:
            taken = (self.queries, self.hits)
            self.queries = self.hits = 0
        return taken


def counting_logger(counts: PrefixCacheCounts) -> Any:
    """A vLLM stat-logger factory (``AsyncLLM(stat_loggers=[...])``) adding to ``counts``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class PrefixCacheLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            stats = getattr(scheduler_stats, "prefix_cache_stats", None)
            if stats is not None:
                counts.add(stats.queries, stats.hits)

        def log_engine_initialized(self) -> None:
            pass

    return PrefixCacheLogger
