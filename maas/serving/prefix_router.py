"""Serve's request-router API with prefix-cache affinity, for generator deployments.

Set on a generator by ``prefix_routing.enabled`` (``pipelines/app.py`` passes
``RequestRouterConfig(request_router_class=PREFIX_ROUTER_PATH, ...)``); it runs in the process that
holds the generator's handle (the ingress). The choice is :class:`maas.serving.prefix_affinity.
PrefixAffinity`'s; everything else is Serve's: the replica list, the queue-length cache and
probes, the retry with backoff, LoRA multiplexing (a request with a multiplexed model id is routed
by Serve's power of two choices: its adapter's replicas matter more than its prefix) and the
fallback (the default power-of-two choice) ranked after the preferred replica.

What maas reuses from Ray Serve LLM's ``PrefixCacheAffinityRouter`` is the policy idea and the
class layout (``LocalityMixin, MultiplexMixin, RequestRouter``, power of two as the fallback rank);
not its code, because here (Ray 2.60): importing ``ray.serve.llm.request_router`` imports vLLM,
torch and transformers (about 17 s, in the ingress); importing the internal module replaces the
process's root logging handler (``ray.llm._internal.serve`` sets up JSON logging on import); it
keeps its prefix tree in a detached actor that needs a free CPU to be scheduled and calls it with a
blocking ``ray.get`` on every request, on the routing loop; and it reads text from a request's
``prompt`` / ``messages`` attributes, while a maas generator call carries token ids.
"""

from __future__ import annotations

from typing import Any

from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from maas.serving.prefix_affinity import PrefixAffinity, ReplicaLoad

PREFIX_ROUTER_PATH = "maas.serving.prefix_router:PrefixAffinityRouter"


def prompt_ids(pending_request: PendingRequest | None) -> list[int] | None:
    """The prompt's token ids: a generator call's first argument (``generate(ids, params)``)."""
    if pending_request is None or not pending_request.args:
        return None
    first = pending_request.args[0]
    if isinstance(first, list) and (not first or isinstance(first[0], int)):
        return first
    return None


class PrefixAffinityRouter(LocalityMixin, MultiplexMixin, RequestRouter):
    """Prefers the replica that holds the prompt's prefix (or the session's replica) unless it is
    overloaded; else Serve's power of two choices."""

    def initialize_state(self, **kwargs: Any) -> None:
        """``kwargs``: those of :class:`PrefixAffinity` (from the generator's ``prefix_routing``)."""
        self.affinity = PrefixAffinity(**kwargs)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        fallback = await PowerOfTwoChoicesRequestRouter.choose_replicas(
            self, candidate_replicas=candidate_replicas, pending_request=pending_request)  # type: ignore[arg-type]
        if pending_request is None or pending_request.metadata.multiplexed_model_id or not candidate_replicas:
            return fallback
        ids = prompt_ids(pending_request)
        session = pending_request.metadata.session_id
        if not ids and not session:
            return fallback
        loads = await self._loads(candidate_replicas)
        chosen = self.affinity.choose(ids, session, loads)
        replica = self._replicas.get(ReplicaID.from_full_id_str(chosen)) if chosen else None
        return [[replica], *fallback] if replica is not None else fallback

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, ReplicaLoad]:
        """Each replica's ongoing requests: from Serve's queue-length cache, else probed."""
        ongoing: dict[ReplicaID, int | None] = {r.replica_id: self._cached_len(r) for r in replicas}
        missing = [r for r in replicas if ongoing[r.replica_id] is None]
        if missing:
            for replica, queue_len in await self._probe_queue_lens(missing, 0):
                ongoing[replica.replica_id] = queue_len
        return {r.replica_id.to_full_id_str(): ReplicaLoad(ongoing[r.replica_id], r.max_ongoing_requests)
                for r in replicas}

    def _cached_len(self, replica: RunningReplica) -> int | None:
        if not self._use_replica_queue_len_cache:
            return None
        return self._replica_queue_len_cache.get(replica.replica_id)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        self.affinity.routed(prompt_ids(pending_request), replica_id.to_full_id_str())

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self.affinity.index.keep_only(r.to_full_id_str() for r in self._replica_id_set)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.affinity.index.keep_only(r.to_full_id_str() for r in self._replica_id_set)
