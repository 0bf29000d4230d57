"""The ingress prepares a request (tool schemas, chat template, tokens) off its event loop: while
one request's tools compile, another request of the same replica is answered at once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import GENERATOR

pytestmark = pytest.mark.integration

TOOLS = 16
"""Tools of :data:`SCHEMA`: each takes structured decoding a noticeable time to compile."""

SCHEMA = {
    "type": "object",
    "properties": {
        f"p{i}": {"type": "object", "required": [f"q{j}" for j in range(8)], "properties": {
            f"q{j}": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,8}$"}} for j in range(8)}}
        for i in range(8)},
    "required": [f"p{i}" for i in range(8)],
}


def test_compiling_tools_does_not_hold_up_another_request(service: str) -> None:
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": SCHEMA}} for i in range(TOOLS)]
    body = {"model": GENERATOR, "max_tokens": 1, "tools": tools,
            "messages": [{"role": "user", "content": "Call a tool."}]}
    with httpx.Client(base_url=service, timeout=300) as slow_http, \
            httpx.Client(base_url=service, timeout=60) as http, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        slow = pool.submit(slow_http.post, "/v1/chat/completions", json=body)
        time.sleep(0.2)
        probes: list[float] = []
        while not slow.done():
            sent = time.monotonic()
            assert http.get("/v1/models").status_code == 200
            probes.append(time.monotonic() - sent)
        took = time.monotonic() - started
    # 400: the tools' text does not fit the test model's context, found after the tools compiled
    assert slow.result().status_code in (200, 400)
    assert probes, f"the tools compiled in {took:.2f}s, before any probe: make SCHEMA larger"
    assert max(probes) < took / 2, (max(probes), took)
