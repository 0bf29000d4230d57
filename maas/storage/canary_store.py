"""Canaries of registry models, stored in ``<registry>/<name>/canary.json``.

``maas rollout NAME VERSION --canary PERCENT`` writes the running canary; the ingress replicas
answer that share of the name's requests with the canary version (:mod:`maas.serving.canary`),
tally both versions' requests, errors and latencies, and add their tallies about once a second
to the file, under the model's canary lock, read-add-write (several replicas, on several nodes
where the registry is shared, add up). After each addition the replica judges the merged
figures; a rollback or a promotion ends the canary (a promotion makes the version live with
:meth:`ModelRegistry.set_live`). Every decision is appended, with its evidence, to a bounded
list in the same file, which ``/v1/models`` and ``maas models list`` show. Only counts, seconds
and version names are stored; no client text.

File layout::

    {"active": {...} | null,          the running canary (CanaryRecord)
     "decisions": [{...}, ...],       started / held / rolled_back / promoted / cancelled, newest last
     "rolled_back": ["v3", ...]}      versions a canary rolled back: no challenger any more
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from maas.storage.files import locked, read_json, write_atomic
from maas.storage.registry import CANARY_FILE, ModelRegistry, RegistryError, check_name

CANARY_LOCK = ".canary.lock"
MAX_DECISIONS = 50
"""Decisions kept per model (the oldest go first)."""

Action = Literal["started", "held", "rolled_back", "promoted", "cancelled"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ArmTally(BaseModel):
    """One version's requests in a canary: counts and the latest latency samples."""

    requests: int = Field(0, description="Requests sent to this version (answered or failed).")
    errors: int = Field(0, description="Of those, the failed ones (a canary's were retried on the live version).")
    latencies_s: list[float] = Field(default_factory=list, description="Latest answered calls' seconds.")

    def plus(self, other: ArmTally, keep: int) -> ArmTally:
        return ArmTally(requests=self.requests + other.requests, errors=self.errors + other.errors,
                        latencies_s=(self.latencies_s + other.latencies_s)[-keep:])

    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def p95_s(self) -> float | None:
        """The 95th percentile of the kept samples (nearest rank); None without samples."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


class CanaryTally(BaseModel):
    """What a replica saw of one canary since its last write: the live and the canary arm."""

    live: ArmTally = Field(default_factory=ArmTally)
    canary: ArmTally = Field(default_factory=ArmTally)

    def plus(self, other: CanaryTally, keep: int) -> CanaryTally:
        return CanaryTally(live=self.live.plus(other.live, keep), canary=self.canary.plus(other.canary, keep))


class CanaryRecord(CanaryTally):
    """A running canary with every replica's tallies added up."""

    version: str = Field(description="The canary version, e.g. `v3`.")
    live_version: str = Field(description="The live version when the canary started.")
    percent: float = Field(description="Share of the name's requests the canary answers, in percent.")
    allow_label_change: bool = Field(False, description="Promotion may change the labels clients see.")
    held: bool = Field(False, description="The canary passed, but the promotion rule did not (yet).")
    started_at: str = ""
    updated_at: str = ""


class Decision(BaseModel):
    """One decision about a canary, with the figures it was made on."""

    action: Action
    version: str
    live_version: str
    at: str = Field(default_factory=now_iso)
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)


class CanaryState(BaseModel):
    active: CanaryRecord | None = None
    decisions: list[Decision] = Field(default_factory=list)
    rolled_back: list[str] = Field(default_factory=list)


Judge = Callable[[CanaryRecord], Decision | None]
"""Judges a canary's merged figures: a decision (``held``, ``rolled_back``, ``promoted``) or None."""


class CanaryStore:
    """The canaries of a registry's models."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def read(self, name: str) -> CanaryState:
        data = read_json(self.registry.root / check_name(name) / CANARY_FILE)
        try:
            return CanaryState.model_validate(data) if data else CanaryState()
        except ValueError:
            return CanaryState()

    def active(self, name: str) -> CanaryRecord | None:
        return self.read(name).active

    def start(self, name: str, version: str, percent: float, allow_label_change: bool = False,
              evidence: dict[str, Any] | None = None) -> Decision:
        """Start a canary of ``version`` (replacing a running one, which is cancelled); refuse a
        version that is live, unknown, or whose labels differ (unless allowed)."""
        if not 0 < percent <= 100:
            raise RegistryError(f"A canary's share is a percent in (0, 100], not {percent}.")
        target = self.registry.get(name, version)
        live = self.registry.live_version(name)
        if live is None or live == version:
            raise RegistryError(f"{name}/{version} is {'live' if live else 'not comparable: no live version'}; "
                                "a canary needs another live version to compare with.")
        if not allow_label_change and self.registry.get(name, live).labels != target.labels:
            raise RegistryError(f"{name}/{version} has labels {target.labels}, unlike the live {name}/{live}: "
                                "pass --allow-label-change to canary it anyway.")
        record = CanaryRecord(version=version, live_version=live, percent=percent,
                              allow_label_change=allow_label_change, started_at=now_iso(), updated_at=now_iso())
        started = Decision(action="started", version=version, live_version=live,
                           reason=f"{percent:g}% of requests", evidence={"percent": percent, **(evidence or {})})
        with locked(self._lock(name)):
            state = self.read(name)
            ended = self._cancel(state, f"replaced by a canary of {version}")
            state.active = record
            self._write(name, state, [*ended, started])
        return started

    def stop(self, name: str, reason: str = "stopped by the operator") -> Decision | None:
        """End the running canary without a verdict (``--canary 0``, a plain rollout); None if
        none runs."""
        with locked(self._lock(name)):
            state = self.read(name)
            ended = self._cancel(state, reason)
            if ended:
                self._write(name, state, ended)
        return ended[0] if ended else None

    def add(self, name: str, version: str, tally: CanaryTally, keep: int, judge: Judge) -> Decision | None:
        """Add a replica's tally to the running canary of ``version`` (dropped if that canary
        ended), judge the sum, and apply the decision: a promotion makes the version live."""
        with locked(self._lock(name)):
            state = self.read(name)
            if state.active is None or state.active.version != version:
                return None
            summed = state.active.plus(tally, keep)
            record = state.active.model_copy(update={"live": summed.live, "canary": summed.canary,
                                                     "updated_at": now_iso()})
            decision = judge(record)
            state.active = record
            if decision is not None:
                self._apply(name, state, decision)
            self._write(name, state, [decision] if decision else [])
            return decision

    def _apply(self, name: str, state: CanaryState, decision: Decision) -> None:
        record = state.active
        assert record is not None
        if decision.action == "held":
            state.active = record.model_copy(update={"held": True})
            return
        if decision.action == "promoted":
            self.registry.set_live(name, record.version, allow_label_change=record.allow_label_change)
        elif decision.action == "rolled_back":
            kept = [v for v in state.rolled_back if v != record.version]
            state.rolled_back = [*kept, record.version][-MAX_DECISIONS:]
        state.active = None

    @staticmethod
    def _cancel(state: CanaryState, reason: str) -> list[Decision]:
        if state.active is None:
            return []
        old, state.active = state.active, None
        return [Decision(action="cancelled", version=old.version, live_version=old.live_version, reason=reason,
                         evidence=evidence_of(old))]

    def _lock(self, name: str) -> Any:
        return self.registry.root / check_name(name) / CANARY_LOCK

    def _write(self, name: str, state: CanaryState, decisions: list[Decision]) -> None:
        state.decisions = [*state.decisions, *decisions][-MAX_DECISIONS:]
        write_atomic(self.registry.root / name / CANARY_FILE, json.dumps(state.model_dump(), indent=2) + "\n")


def evidence_of(record: CanaryTally) -> dict[str, Any]:
    """Both arms' counts, error rates and p95s (ms), as decisions store them."""
    found: dict[str, Any] = {}
    for arm, tally in (("live", record.live), ("canary", record.canary)):
        rate, p95 = tally.error_rate(), tally.p95_s()
        found |= {f"{arm}_requests": tally.requests, f"{arm}_errors": tally.errors,
                  f"{arm}_error_rate": None if rate is None else round(rate, 4),
                  f"{arm}_p95_ms": None if p95 is None else round(p95 * 1000, 2)}
    return found
