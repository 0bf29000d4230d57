"""Bounded work per request, over real HTTP on the session's service (``ingress.limits`` at their
defaults; the generator's ``max_tokens_limit`` is 256): a request over the budget is a 400
``request_too_large`` naming what to lower, answered before any generation (a stream too: a JSON
400, not a 200 event stream), and another client's chat is still answered. No check here depends
on the machine's speed (no timing assertions).

The stream duration limit (``ingress.max_stream_s``, default 600 s) is shown on a keyed ingress
with a small ``max_stream_s`` over the same generator (tests/integration/test_metered_streams.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import GENERATOR

pytestmark = pytest.mark.integration

CHAT = {"model": GENERATOR, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}


def refused(client: httpx.Client, path: str, body: dict[str, Any], param: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("request_too_large", "invalid_request_error", param)
    assert response.headers["content-type"].startswith("application/json")  # a stream too: no 200


def test_the_measured_amplification_is_refused_and_a_chat_still_answers(client: httpx.Client) -> None:
    """64 prompts x n 8 at max_tokens with ignore_eos, streamed: refused before any generation."""
    body = {"model": GENERATOR, "prompt": ["Count to a thousand:"] * 64, "n": 8, "max_tokens": 256,
            "ignore_eos": True, "stream": True, "temperature": 1}
    refused(client, "/v1/completions", body, "n")
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_echo_log_probabilities_are_bounded_after_tokenizing(client: httpx.Client) -> None:
    """16 prompts of about 400 tokens x n 8 x 21 log probabilities per position: over a million."""
    prompt = "word " * 400
    body = {"model": GENERATOR, "prompt": [prompt] * 16, "n": 8, "max_tokens": 1, "temperature": 1,
            "echo": True, "logprobs": 20}
    refused(client, "/v1/completions", body, "logprobs")
    refused(client, "/v1/completions", {**body, "echo": False, "logprobs": None, "prompt_logprobs": 20},
            "prompt_logprobs")


def test_echoed_prompt_log_probabilities_are_the_same_in_every_choice(client: httpx.Client) -> None:
    body = {"model": GENERATOR, "prompt": ["The cat sat on the mat.", "Paris is in France."], "n": 2,
            "max_tokens": 1, "temperature": 1, "seed": 1, "echo": True, "logprobs": 1}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    choices = sorted(response.json()["choices"], key=lambda choice: choice["index"])
    for first, second in (choices[0:2], choices[2:4]):
        prompt_positions = len(first["logprobs"]["tokens"]) - 1
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            assert first["logprobs"][key][:prompt_positions] == second["logprobs"][key][:prompt_positions]
    assert choices[0]["logprobs"]["tokens"] != choices[2]["logprobs"]["tokens"]


def test_tool_schemas_and_tokenize_text_are_bounded(client: httpx.Client) -> None:
    big = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(4000)}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": big}}]
    refused(client, "/v1/chat/completions", {**CHAT, "tools": tools}, "tools")
    refused(client, "/v1/chat/completions",
            {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": big}}},
            "response_format")
    refused(client, "/v1/tokenize", {"model": GENERATOR, "prompt": "x" * 300_000}, "prompt")
    assert client.post("/v1/tokenize", json={"model": GENERATOR, "prompt": "x" * 1000}).status_code == 200
