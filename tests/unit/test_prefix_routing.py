"""Cache-aware routing of generator requests: the choice (:mod:`maas.serving.prefix_affinity`)
and Serve's request router around it (:mod:`maas.serving.prefix_router`), with fake replicas
standing in for the replicas' queue lengths only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from maas.config import GeneratorModelConfig
from maas.serving.prefix_affinity import PrefixAffinity, PrefixIndex, ReplicaLoad, session_replica

SYSTEM = list(range(1000, 1064))  # a 64-token shared system prompt


def conversation(n: int, turns: int) -> list[int]:
    """The system prompt, then ``turns`` 16-token turns of conversation ``n``."""
    return SYSTEM + [n * 10_000 + i for i in range(16 * turns)]


def loads(**ongoing: int | None) -> dict[str, ReplicaLoad]:
    return {name: ReplicaLoad(value, capacity=8) for name, value in ongoing.items()}


def test_index_matches_whole_blocks_from_the_start() -> None:
    index = PrefixIndex(block_tokens=16)
    index.add(conversation(1, 2), "a")
    assert index.matched_tokens(conversation(1, 3), ["a", "b"]) == {"a": 96, "b": 0}
    assert index.matched_tokens(conversation(2, 3), ["a"]) == {"a": 64}  # the system prompt only
    assert index.matched_tokens([7] + conversation(1, 3), ["a"]) == {"a": 0}  # a prefix, not a substring


def test_index_drops_least_recently_used_blocks_and_gone_replicas() -> None:
    index = PrefixIndex(block_tokens=16, max_blocks=6)
    index.add(conversation(1, 2), "a")  # 6 blocks
    index.add(conversation(2, 1), "b")  # the 4 system blocks refreshed, 1 new: a's 5th block goes
    assert len(index) == 6
    assert index.matched_tokens(conversation(1, 2), ["a"]) == {"a": 64}
    index.keep_only(["b"])
    assert index.matched_tokens(conversation(1, 2), ["a", "b"]) == {"a": 0, "b": 64}


def test_a_shared_prefix_goes_to_the_replica_that_has_it() -> None:
    affinity = PrefixAffinity()
    affinity.routed(conversation(1, 1), "a")
    affinity.routed(conversation(2, 1), "b")
    for _ in range(5):
        assert affinity.choose(conversation(1, 2), "", loads(a=2, b=1)) == "a"
        assert affinity.choose(conversation(2, 2), "", loads(a=1, b=2)) == "b"


def test_equal_matches_go_to_the_least_loaded_and_no_match_to_the_default() -> None:
    affinity = PrefixAffinity()
    affinity.routed(conversation(1, 1), "a")
    affinity.routed(conversation(2, 1), "b")
    assert affinity.choose(conversation(3, 1), "", loads(a=3, b=1)) == "b"  # both hold the system prompt
    assert affinity.choose(list(range(5, 85)), "", loads(a=0, b=0)) is None


def test_an_overloaded_replica_is_passed_over() -> None:
    affinity = PrefixAffinity(max_imbalance=2)
    affinity.routed(conversation(1, 3), "a")
    affinity.routed(SYSTEM, "b")
    assert affinity.choose(conversation(1, 4), "", loads(a=3, b=1)) == "a"
    assert affinity.choose(conversation(1, 4), "", loads(a=4, b=1)) == "b"  # 3 above the least loaded
    full = {"a": ReplicaLoad(4, capacity=4), "b": ReplicaLoad(3, capacity=8)}
    assert affinity.choose(conversation(1, 4), "", full) == "b"


def test_a_session_is_pinned_to_one_replica_unless_it_is_overloaded() -> None:
    affinity = PrefixAffinity(max_imbalance=2)
    replicas = loads(a=1, b=1, c=1)
    pinned = {affinity.choose(None, "conversation-7", replicas) for _ in range(5)}
    assert pinned == {session_replica("conversation-7", ["a", "b", "c"])}
    owner = pinned.pop()
    busy = {**replicas, owner: ReplicaLoad(5, capacity=8)}
    assert affinity.choose(None, "conversation-7", busy) is None  # no prefix known: the default choice
    spread = {session_replica(f"s{i}", ["a", "b", "c"]) for i in range(30)}
    assert spread == {"a", "b", "c"}


def test_the_session_wins_over_the_prefix_and_can_be_turned_off() -> None:
    affinity = PrefixAffinity()
    owner = session_replica("s1", ["a", "b"])
    other = "b" if owner == "a" else "a"
    affinity.routed(conversation(1, 2), other)
    assert affinity.choose(conversation(1, 3), "s1", loads(a=0, b=0)) == owner
    assert PrefixAffinity(sessions=False).choose(None, "s1", loads(a=0, b=0)) is None


def test_the_config_turns_the_router_on() -> None:
    config = GeneratorModelConfig(name="g", path="p", prefix_routing={"enabled": True, "max_imbalance": 2})
    assert config.prefix_routing.router_kwargs() == {
        "sessions": True, "max_imbalance": 2, "min_match_ratio": 0.1, "block_tokens": 16, "max_blocks": 65536}
    PrefixAffinity(**config.prefix_routing.router_kwargs())  # the router's initialize_state takes them


# ---------------------------------------------------------------- Serve's request router


class FakeReplica:
    """A replica as Serve's router sees it; only its queue length is faked."""

    def __init__(self, name: str, ongoing: int, capacity: int = 8) -> None:
        from ray.serve._private.common import DeploymentID, ReplicaID

        self.replica_id = ReplicaID(unique_id=name, deployment_id=DeploymentID(name="generator", app_name="maas"))
        self.ongoing = ongoing
        self.max_ongoing_requests = capacity
        self.node_id = ""
        self.availability_zone = None
        self.multiplexed_model_ids: set[str] = set()

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return self.ongoing

    def push_proxy_handle(self, handle: Any) -> None:
        pass


def pending(ids: list[int], session: str = "", adapter: str = "") -> Any:
    from ray.serve._private.common import RequestMetadata
    from ray.serve._private.request_router.common import PendingRequest

    metadata = RequestMetadata(request_id="r", internal_request_id="r", session_id=session,
                               multiplexed_model_id=adapter)
    return PendingRequest(args=[ids, None], kwargs={}, metadata=metadata)


async def routed_to(router: Any, request: Any) -> str:
    """Where Serve sends the request: the least loaded replica of the router's first rank."""
    ranks = await router.choose_replicas(router._replicas_list, request)
    replica = min(ranks[0], key=lambda r: r.ongoing)
    router.on_request_routed(request, replica.replica_id, None)
    return replica.replica_id.unique_id


def make_router(replicas: list[FakeReplica], **kwargs: Any) -> Any:
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    from maas.serving.prefix_router import PrefixAffinityRouter

    router = PrefixAffinityRouter(deployment_id=DeploymentID(name="generator", app_name="maas"),
                                  handle_source=DeploymentHandleSource.UNKNOWN,
                                  use_replica_queue_len_cache=False)
    router.initialize_state(**kwargs)
    router.update_replicas(replicas)
    return router


@pytest.mark.filterwarnings("ignore")
def test_serve_router_keeps_a_conversation_on_its_replica_until_it_is_overloaded() -> None:
    async def scenario() -> None:
        a, b = FakeReplica("a", 1), FakeReplica("b", 1)
        router = make_router([a, b], max_imbalance=2)
        first = await routed_to(router, pending(conversation(1, 1)))
        assert {await routed_to(router, pending(conversation(1, t))) for t in range(2, 6)} == {first}
        busy, free = (a, b) if first == "a" else (b, a)
        busy.ongoing = 4
        assert await routed_to(router, pending(conversation(1, 6))) == free.replica_id.unique_id

    asyncio.run(scenario())


@pytest.mark.filterwarnings("ignore")
def test_serve_router_pins_sessions_and_leaves_adapters_to_serve() -> None:
    async def scenario() -> None:
        router = make_router([FakeReplica("a", 0), FakeReplica("b", 0), FakeReplica("c", 0)])
        owner = session_replica("chat-1", [r.replica_id.to_full_id_str() for r in router._replicas_list])
        chosen = {await routed_to(router, pending(list(range(t)), session="chat-1")) for t in range(1, 6)}
        assert chosen == {owner.split("#")[-1]}
        ranks = await router.choose_replicas(router._replicas_list, pending(conversation(1, 1), adapter="topic/v1"))
        assert len(ranks) == 1  # Serve's own choice only: power of two

    asyncio.run(scenario())
