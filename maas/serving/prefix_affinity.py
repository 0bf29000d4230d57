"""Which generator replica should get a prompt: the one whose prefix cache already holds it.

A multi-turn chat or an agent loop resends the same growing prompt. vLLM keeps the KV blocks of
earlier prompts (its prefix cache) and computes only the new tail, but only on the replica that
saw them: sent elsewhere, the whole prompt is computed again. This module remembers, per replica,
which prompt prefixes it was sent, and picks a replica for the next prompt:

1. A request with a session id goes to the replica the id hashes to (rendezvous hashing over the
   live replicas: the same choice in every ingress replica, and only the sessions of a replica that
   went away move), unless that replica is *overloaded*.
2. Else the replica whose remembered prompts share the longest prefix with this one, if that
   prefix is at least ``min_match_ratio`` of the prompt and the replica is not overloaded; equal
   matches go to the least loaded.
3. Else no preference: the caller routes as usual (Serve's power of two choices).

*Overloaded*: its ongoing requests reach its ``max_ongoing_requests``, or exceed the least loaded
replica's by more than ``max_imbalance``. Affinity never queues a request behind a busy replica
while another is free by that margin.

Prompts are token ids, remembered as a chain of hashes of ``block_tokens``-token blocks (the way
vLLM's own prefix cache keys its blocks): a prefix matches block by block from the start. At most
``max_blocks`` blocks are kept, the least recently used dropped first, so memory is bounded
(about 340 bytes a block). The same policy idea as Ray Serve LLM's ``PrefixCacheAffinityRouter``
(balanced load: best prefix match; imbalanced: the default choice), on token ids and in-process.
Plain Python: :mod:`maas.serving.prefix_router` plugs it into Serve.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaLoad:
    """What the router knows of one replica's load: requests it runs now (None: unknown) and its
    ``max_ongoing_requests``."""

    ongoing: int | None
    capacity: int


class PrefixIndex:
    """Which replicas were sent which prompt prefixes, by hashed blocks of tokens (LRU-bounded)."""

    def __init__(self, block_tokens: int = 16, max_blocks: int = 65536) -> None:
        self.block_tokens = block_tokens
        self.max_blocks = max_blocks
        self._owners: OrderedDict[int, set[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def block_hashes(self, token_ids: Sequence[int]) -> list[int]:
        """The chained hashes of the prompt's full blocks (a block's hash covers all before it)."""
        hashes: list[int] = []
        previous = 0
        size = self.block_tokens
        for start in range(0, len(token_ids) - size + 1, size):
            previous = hash((previous, tuple(token_ids[start:start + size])))
            hashes.append(previous)
        return hashes

    def add(self, token_ids: Sequence[int], replica: str) -> None:
        """Remember that ``replica`` was sent this prompt (so now caches its blocks)."""
        for block in self.block_hashes(token_ids):
            owners = self._owners.get(block)
            if owners is None:
                owners = self._owners[block] = set()
            else:
                self._owners.move_to_end(block)
            owners.add(replica)
        while len(self._owners) > self.max_blocks:
            self._owners.popitem(last=False)

    def matched_tokens(self, token_ids: Sequence[int], replicas: Iterable[str]) -> dict[str, int]:
        """For each of ``replicas``: how many leading tokens of the prompt it was sent before."""
        matched = dict.fromkeys(replicas, 0)
        alive = set(matched)
        for count, block in enumerate(self.block_hashes(token_ids), start=1):
            alive &= self._owners.get(block, set())
            if not alive:
                break
            for replica in alive:
                matched[replica] = count * self.block_tokens
        return matched

    def keep_only(self, replicas: Iterable[str]) -> None:
        """Forget replicas that are gone (their cache went with them)."""
        live = set(replicas)
        for block in list(self._owners):
            owners = self._owners[block]
            owners &= live
            if not owners:
                del self._owners[block]


def session_replica(session_id: str, replicas: Iterable[str]) -> str | None:
    """The replica a session belongs to: rendezvous hashing (highest hash of session + replica)."""
    def score(replica: str) -> bytes:
        return hashlib.blake2b(f"{session_id}\x00{replica}".encode(), digest_size=8).digest()

    return max(replicas, key=score, default=None)


def overloaded(load: ReplicaLoad, least_ongoing: int, max_imbalance: int) -> bool:
    """Full, or busier than the least loaded replica by more than ``max_imbalance`` requests."""
    ongoing = load.ongoing if load.ongoing is not None else least_ongoing
    return ongoing >= load.capacity or ongoing - least_ongoing > max_imbalance


class PrefixAffinity:
    """The routing choice (see the module's docstring); holds the prefix index."""

    def __init__(self, block_tokens: int = 16, max_blocks: int = 65536, max_imbalance: int = 4,
                 min_match_ratio: float = 0.1, sessions: bool = True) -> None:
        self.index = PrefixIndex(block_tokens, max_blocks)
        self.max_imbalance = max_imbalance
        self.min_match_ratio = min_match_ratio
        self.sessions = sessions

    def choose(self, token_ids: Sequence[int] | None, session_id: str,
               loads: Mapping[str, ReplicaLoad]) -> str | None:
        """The preferred replica among ``loads``' keys, or None for no preference."""
        known = [load.ongoing for load in loads.values() if load.ongoing is not None]
        least = min(known, default=0)
        ready = [r for r, load in loads.items() if not overloaded(load, least, self.max_imbalance)]
        if self.sessions and session_id:
            pinned = session_replica(session_id, loads)
            if pinned in ready:
                return pinned
        if not token_ids or not ready:
            return None
        return self._best_match(token_ids, ready, loads)

    def _best_match(self, token_ids: Sequence[int], ready: list[str],
                    loads: Mapping[str, ReplicaLoad]) -> str | None:
        matched = self.index.matched_tokens(token_ids, ready)
        longest = max(matched.values())
        if longest == 0 or longest < self.min_match_ratio * len(token_ids):
            return None
        best = [r for r in ready if matched[r] == longest]
        return min(best, key=lambda r: loads[r].ongoing or 0)

    def routed(self, token_ids: Sequence[int] | None, replica: str) -> None:
        """Record that a prompt went to ``replica``."""
        if token_ids:
            self.index.add(token_ids, replica)
