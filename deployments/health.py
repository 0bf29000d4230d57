"""Health checks that prove work, run at most every few seconds.

Every deployment's health check (Serve's periodic ``check_health`` and the ingress's
``/health``) runs a tiny real call of its engine. A check that passed is reused for
``HEALTH_CACHE_S`` seconds, so a load balancer polling ``/health`` cannot turn health checks
into load; a failure is never cached.
"""

from __future__ import annotations

import math
import time
from typing import Any

HEALTH_CACHE_S = 5.0


class HealthCache:
    """When the last real health check passed."""

    def __init__(self, ttl_s: float = HEALTH_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._passed_at = -math.inf

    def fresh(self) -> bool:
        """Whether a check passed within the last ``ttl_s`` seconds."""
        return time.monotonic() - self._passed_at < self.ttl_s

    def passed(self) -> None:
        self._passed_at = time.monotonic()


class EngineHealth:
    """``ping`` and Serve's ``check_health`` for a deployment whose engine has a ``ping()`` (a tiny
    real call): run at most every ``HEALTH_CACHE_S`` seconds, through ``self.health``."""

    engine: Any
    health: HealthCache

    def ping(self) -> bool:
        if not self.health.fresh():
            self.engine.ping()
            self.health.passed()
        return True

    def check_health(self) -> None:
        self.ping()
