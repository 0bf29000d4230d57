"""The fair share over real HTTP on the real encoder (maas/edge/fair_share.py): a key that floods
the service is held to its requests in flight and refused with 429 and Retry-After past them,
while another key sent in the same burst is answered; the flooding key's turns all come back.

An application of its own (MiniLM embeddings, one ingress replica so that the limits are exact)
on the session's proxy: no generator to start. The generator's share is shown by
``benchmarks/noisy_neighbour.py`` and by ``tests/unit/test_fair_share_rules.py``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from maas.edge import key_file
from tests.conftest import wait_healthy

pytestmark = pytest.mark.integration

ENCODER = "fair-encoder"
PREFIX = "/fair"
FLOOD_LIMIT, FLOOD_WAITING = 2, 2
"""Key a's requests in flight, and waiting for a turn: more is a 429."""
FLOOD = 32
"""Key a's concurrent requests: far more than its limit and line together."""
OTHER = 8
"""Key b's requests in the same burst."""
TEXTS = [f"sentence number {i} about the weather, the train and the sea" for i in range(256)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("fair-keys") / "api-keys.yaml"
    return path, {"a": key_file.add_key(path, "a", max_in_flight=FLOOD_LIMIT), "b": key_file.add_key(path, "b")}


@pytest.fixture(scope="module")
def fair(service: str, minilm_dir: Path, keys: tuple[Path, dict[str, str]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A keyed application with an encoder only, on the session's proxy."""
    from ray import serve

    from maas.config import AppConfig
    from pipelines.app import build_app

    config = AppConfig.model_validate({
        "encoder": {"models": [{"name": ENCODER, "path": str(minilm_dir), "max_seq_len": 32}],
                    "deployment": {"num_cpus": 0.05, "max_ongoing_requests": 128}},
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        "ingress": {"api_keys_file": str(keys[0]), "deployment": {"num_cpus": 0.05, "max_ongoing_requests": 128},
                    "fair_share": {"max_waiting_requests": FLOOD_WAITING, "max_wait_s": 2}},
        "batch_dir": str(tmp_path_factory.mktemp("fair-batches")),
    })
    serve.run(build_app(config), name="fair", route_prefix=PREFIX, blocking=False)
    wait_healthy(service + PREFIX, 300)
    yield service + PREFIX
    serve.delete("fair")


def embed(base: str, secret: str, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{base}/v1/embeddings", json={"model": ENCODER, "input": texts},
                      headers={"Authorization": f"Bearer {secret}"}, timeout=120)


def test_a_flooding_key_gets_429s_while_another_key_is_answered(fair: str, keys: tuple[Path, dict[str, str]]) -> None:
    _, secrets = keys
    burst = [("a", TEXTS)] * FLOOD + [("b", TEXTS[:4])] * OTHER
    with ThreadPoolExecutor(max_workers=len(burst)) as pool:
        answers = list(pool.map(lambda item: (item[0], embed(fair, secrets[item[0]], item[1])), burst))
    flood = [r for who, r in answers if who == "a"]
    other = [r for who, r in answers if who == "b"]
    statuses = Counter(r.status_code for r in flood)
    print(f"\nfair share: key a {dict(statuses)} of {FLOOD}; key b "
          f"{dict(Counter(r.status_code for r in other))} of {OTHER}")

    assert [r.status_code for r in other] == [200] * OTHER  # b is not held back by a's line
    assert all(len(r.json()["data"]) == 4 for r in other)
    assert set(statuses) <= {200, 429} and statuses[200] >= 1
    # a's flood is far over its 2 in flight and 2 waiting: most of it is refused
    assert statuses[429] >= 1, dict(statuses)
    for refused in (r for r in flood if r.status_code == 429):
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "too_many_requests_in_flight"), error
        assert "API key 'a'" in error["message"] and set(error) == {"message", "type", "param", "code"}

    # every turn of a came back: its next requests are answered, one at a time and at its limit
    assert [embed(fair, secrets["a"], TEXTS[:2]).status_code for _ in range(3)] == [200] * 3
    with ThreadPoolExecutor(max_workers=FLOOD_LIMIT) as pool:
        at_limit = list(pool.map(lambda _: embed(fair, secrets["a"], TEXTS[:2]).status_code, range(FLOOD_LIMIT)))
    assert at_limit == [200] * FLOOD_LIMIT
