"""The ingress prepares a request (tool schemas, chat template, tokens) off its event loop: while
one request's tools compile, other requests of the same replica are answered.

The check is on the order of the answers, not on times (the machine's speed does not matter): the
probes sent one after another while the slow request is in flight must be answered before it
ends. Were the preparation on the event loop, a probe sent while the tools compile would wait
for the compile to end, and only the odd probe could slip in before the slow request reaches the
replica or after its preparation; off the loop, the probes keep being answered throughout."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from maas.limits import RequestBudget
from tests.conftest import GENERATOR

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {
        f"p{i}": {"type": "object", "required": [f"q{j}" for j in range(8)], "properties": {
            f"q{j}": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,8}$"}} for j in range(8)}}
        for i in range(8)},
    "required": [f"p{i}" for i in range(8)],
}

TOOLS = RequestBudget().max_schema_chars // len(json.dumps(SCHEMA))
"""Tools of :data:`SCHEMA` (each takes structured decoding a noticeable time to compile): as many
as the request budget's schema size allows (``ingress.limits.max_schema_chars``), else the
request is refused (400 ``request_too_large``) before anything compiles."""

PROBES = 5
"""Probes that must be answered, one after another, while the slow request is in flight."""


def test_compiling_tools_does_not_hold_up_another_request(service: str) -> None:
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": SCHEMA}} for i in range(TOOLS)]
    body = {"model": GENERATOR, "max_tokens": 1, "tools": tools,
            "messages": [{"role": "user", "content": "Call a tool."}]}
    with httpx.Client(base_url=service, timeout=300) as slow_http, \
            httpx.Client(base_url=service, timeout=60) as http, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(slow_http.post, "/v1/chat/completions", json=body)
        answered_first = 0  # probes answered while the slow request had not ended
        while not slow.done():
            assert http.get("/v1/models").status_code == 200
            answered_first += not slow.done()
        # 400: the tools' text does not fit the test model's context, found after the tools compiled
        status = slow.result().status_code
    assert status in (200, 400), slow.result().text
    assert answered_first >= PROBES, (
        f"only {answered_first} probes were answered before the slow request ended: its preparation "
        "held up the event loop, or its tools compile too fast here (make SCHEMA larger)")
