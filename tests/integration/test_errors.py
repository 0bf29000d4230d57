"""Bad input gets the right 4xx with the OpenAI error body, and the service keeps answering."""

import json
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import CLASSIFIER, ENCODER, GENERATOR, TEST_MAX_MODEL_LEN

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]
LONG_PROMPT = "word " * (TEST_MAX_MODEL_LEN + 50)
REFUSAL_BOUND_S = 2.0
"""The issue's bound: every bad input is refused within this time."""


@dataclass(frozen=True)
class Raw:
    """A body sent byte for byte, with its own content type."""

    content: bytes
    content_type: str = "application/json"


def chat_with(extra: bytes) -> Raw:
    """A chat body with raw JSON text spliced in (for what ``json.dumps`` cannot write)."""
    head = json.dumps({"model": GENERATOR, "messages": MSG}).encode()[:-1]
    return Raw(head + b", " + extra + b"}")


TEN_MB = Raw(b'{"model": "x", "input": "' + b"a" * (10 * 1024 * 1024) + b'"}')

CASES = [
    ("malformed json", "POST", CHAT, Raw(b'{"model": "x", '), 400, None),
    ("invalid utf-8", "POST", CHAT, Raw(b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}'), 400, None),
    ("lone surrogate", "POST", CHAT, Raw(b'{"model": "m", "messages": [{"role": "user", "content": "a\\udc00"}]}'), 400, None),
    ("NaN temperature", "POST", CHAT, chat_with(b'"temperature": NaN'), 400, "temperature"),
    ("overflowing top_p", "POST", CHAT, chat_with(b'"top_p": 1e999'), 400, "top_p"),
    ("huge max_tokens", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "max_tokens": 10**30}, 400, "max_tokens"),
    ("5000-digit seed", "POST", CHAT, chat_with(b'"seed": ' + b"7" * 5000), 400, None),
    ("10 MB body", "POST", "/v1/embeddings", TEN_MB, 413, None),
    ("100,000-item classify batch", "POST", "/v1/classify", {"model": CLASSIFIER, "input": ["a"] * 100_000}, 400, "input"),
    ("100,000-item embeddings batch", "POST", "/v1/embeddings", {"model": ENCODER, "input": ["a"] * 100_000}, 400, "input"),
    ("form content type", "POST", CHAT, Raw(b"model=x", "application/x-www-form-urlencoded"), 415, None),
    ("text content type", "POST", "/v1/classify", Raw(b'{"model": "x", "input": "a"}', "text/plain"), 415, None),
    ("empty prompt", "POST", "/v1/completions", {"model": GENERATOR, "prompt": ""}, 400, "prompt"),
    ("negative presence_penalty", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "presence_penalty": -3}, 400, "presence_penalty"),
    ("stop too long", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "stop": "x" * 1000}, 400, "stop"),
    ("seed negative", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "seed": -1}, 400, "seed"),
    ("not an object", "POST", CHAT, [1, 2], 400, None),
    ("missing model", "POST", CHAT, {"messages": MSG}, 400, "model"),
    ("messages wrong type", "POST", CHAT, {"model": GENERATOR, "messages": "hi"}, 400, "messages"),
    ("bad role", "POST", CHAT, {"model": GENERATOR, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages"),
    ("temperature too high", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "temperature": 5}, 400, "temperature"),
    ("top_p zero", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "top_p": 0}, 400, "top_p"),
    ("n too large", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "n": 64}, 400, "n"),
    ("max_tokens zero", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens over limit", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "max_tokens": 100000}, 400, "max_tokens"),
    ("top_logprobs too many", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "logprobs": True, "top_logprobs": 99}, 400, "top_logprobs"),
    ("too many stops", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "stop": list("abcde")}, 400, "stop"),
    ("temperature string", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "temperature": "hot"}, 400, "temperature"),
    ("unknown chat model", "POST", CHAT, {"model": "nope", "messages": MSG}, 404, "model"),
    ("classifier as chat model", "POST", CHAT, {"model": CLASSIFIER, "messages": MSG}, 404, "model"),
    ("prompt longer than context", "POST", "/v1/completions", {"model": GENERATOR, "prompt": LONG_PROMPT}, 400, "prompt"),
    ("chat longer than context", "POST", CHAT, {"model": GENERATOR, "messages": [{"role": "user", "content": LONG_PROMPT}]}, 400, "messages"),
    ("streamed and too long", "POST", CHAT, {"model": GENERATOR, "stream": True, "messages": [{"role": "user", "content": LONG_PROMPT}]}, 400, "messages"),
    ("streamed bad parameter", "POST", CHAT, {"model": GENERATOR, "stream": True, "messages": MSG, "top_p": 9}, 400, "top_p"),
    ("unknown classify model", "POST", "/v1/classify", {"model": "nope", "input": "x"}, 404, "model"),
    ("unknown classifier version", "POST", "/v1/classify", {"model": "sentiment/v99", "input": "x"}, 404, "model"),
    ("schema cannot compile", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}}}}, 400, "response_format"),
    ("schema is not a schema", "POST", CHAT, {"model": GENERATOR, "messages": MSG, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}}, 400, "response_format"),
    ("json_schema type without schema", "POST", CHAT, {"model": GENERATOR, "messages": MSG,
        "response_format": {"type": "json_schema"}}, 400, "response_format"),
    ("classify empty list", "POST", "/v1/classify", {"model": CLASSIFIER, "input": []}, 400, "input"),
    ("classify wrong type", "POST", "/v1/classify", {"model": CLASSIFIER, "input": 42}, 400, "input"),
    ("embeddings unknown model", "POST", "/v1/embeddings", {"model": GENERATOR, "input": "x"}, 404, "model"),
    ("embeddings token ids", "POST", "/v1/embeddings", {"model": ENCODER, "input": [1, 2, 3]}, 400, "input"),
    ("detokenize out of vocab", "POST", "/v1/detokenize", {"model": GENERATOR, "tokens": [10**9]}, 400, "tokens"),
    ("detokenize negative", "POST", "/v1/detokenize", {"model": GENERATOR, "tokens": [-1]}, 400, "tokens"),
    ("tokenize unknown model", "POST", "/v1/tokenize", {"model": "nope", "prompt": "x"}, 404, "model"),
    ("unknown route", "POST", "/v1/nothing", {}, 404, None),
    ("wrong method", "GET", "/v1/chat/completions", None, 405, None),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_openai_error(client: httpx.Client, name, method, path, body, status, param) -> None:
    start = time.perf_counter()
    if isinstance(body, Raw):
        response = client.request(method, path, content=body.content, headers={"content-type": body.content_type})
    else:
        response = client.request(method, path, json=body)
    elapsed = time.perf_counter() - start
    assert response.status_code == status, response.text
    assert elapsed < REFUSAL_BOUND_S, f"{name}: refused after {elapsed:.2f} s"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param


def test_openai_client_sees_typed_errors(openai_client) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="missing", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=GENERATOR, messages=MSG, temperature=7)


def test_service_still_answers_after_bad_input(client: httpx.Client, openai_client) -> None:
    assert client.get("/health").status_code == 200
    answer = openai_client.chat.completions.create(model=GENERATOR, messages=MSG, max_tokens=4)
    assert answer.choices[0].message.content
    assert client.post("/v1/classify", json={"model": CLASSIFIER, "input": "fine"}).status_code == 200
