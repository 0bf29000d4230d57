"""What shadow traffic found, per registry model and (live version, challenger version) pair.

The ingress replicas tally their shadow calls (:mod:`maas.serving.shadow`) and add their tallies
every second or so to ``<registry>/<name>/shadow.json``, under a lock, read-add-write: several
replicas, on several nodes where the registry is shared, add up without losing counts. The
ingress (``/v1/models``) and ``maas models list`` read the same file, as they read
``training.json``. Only counts and sums are stored; no client text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from maas.storage.files import locked, read_json, write_atomic
from maas.storage.registry import ModelRegistry, check_name

SHADOW_FILE = "shadow.json"
SHADOW_LOCK = ".shadow.lock"


class ShadowTally(BaseModel):
    """Counts and sums of shadow calls; tallies of several replicas add up."""

    requests: int = Field(0, description="Shadow calls made to the challenger (answered or failed).")
    errors: int = Field(0, description="Shadow calls the challenger failed.")
    dropped: int = Field(0, description="Sampled requests not shadowed: `max_in_flight` calls were running.")
    texts: int = Field(0, description="Texts both versions answered.")
    agreements: int = Field(0, description="Of those, the texts whose top label was the same.")
    live_confidence_sum: float = Field(0.0, description="Sum of the live version's top probability per text.")
    challenger_confidence_sum: float = Field(0.0, description="The same for the challenger.")
    live_latency_s_sum: float = Field(0.0, description="Sum of the live call's seconds, answered shadow calls.")
    challenger_latency_s_sum: float = Field(0.0, description="Sum of the challenger call's seconds, the same calls.")

    def plus(self, other: ShadowTally) -> ShadowTally:
        return ShadowTally(**{k: getattr(self, k) + getattr(other, k) for k in ShadowTally.model_fields})

    def is_empty(self) -> bool:
        return not (self.requests or self.dropped)


class ShadowRecord(ShadowTally):
    """A tally of one (live, challenger) pair, as stored, with the figures people read."""

    live_version: str
    challenger_version: str
    updated_at: str = ""

    @property
    def answered(self) -> int:
        return self.requests - self.errors

    def agreement(self) -> float | None:
        """Share of texts with the same top label; None before any text was compared."""
        return self.agreements / self.texts if self.texts else None

    def mean_confidence(self) -> tuple[float | None, float | None]:
        """(live, challenger) mean top probability."""
        if not self.texts:
            return None, None
        return self.live_confidence_sum / self.texts, self.challenger_confidence_sum / self.texts

    def mean_latency_s(self) -> tuple[float | None, float | None]:
        """(live, challenger) mean seconds per answered shadow call."""
        if not self.answered:
            return None, None
        return self.live_latency_s_sum / self.answered, self.challenger_latency_s_sum / self.answered


class ShadowLog:
    """The shadow records of a registry's models."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def read(self, name: str) -> list[ShadowRecord]:
        """Every pair's record of ``name``, oldest pair first."""
        rows = read_json(self.registry.root / check_name(name) / SHADOW_FILE).get("pairs") or []
        records = []
        for row in rows:
            try:
                records.append(ShadowRecord.model_validate(row))
            except ValueError:
                continue
        return records

    def get(self, name: str, live_version: str, challenger_version: str) -> ShadowRecord | None:
        return next((r for r in self.read(name)
                     if (r.live_version, r.challenger_version) == (live_version, challenger_version)), None)

    def add(self, name: str, live_version: str, challenger_version: str, tally: ShadowTally) -> None:
        """Add ``tally`` to the pair's record (created if new), under the model's shadow lock."""
        folder = self.registry.root / check_name(name)
        with locked(folder / SHADOW_LOCK):
            records = self.read(name)
            pair = (live_version, challenger_version)
            found = next((r for r in records if (r.live_version, r.challenger_version) == pair), None)
            base = found or ShadowRecord(live_version=live_version, challenger_version=challenger_version)
            updated = ShadowRecord(**base.plus(tally).model_dump(), live_version=live_version,
                                   challenger_version=challenger_version,
                                   updated_at=datetime.now(UTC).isoformat(timespec="seconds"))
            records = [r for r in records if r is not found] + [updated]
            text = json.dumps({"pairs": [r.model_dump() for r in records]}, indent=2) + "\n"
            write_atomic(folder / SHADOW_FILE, text)
