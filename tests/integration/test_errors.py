"""Bad input gets the right 4xx with the OpenAI error body, and the service keeps answering."""

import httpx
import pytest

from tests.conftest import CLASSIFIER, ENCODER, GENERATOR, TEST_MAX_MODEL_LEN

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]
LONG_PROMPT = "word " * (TEST_MAX_MODEL_LEN + 50)

CASES = [
    ("malformed json", "POST", CHAT, b'{"model": "x", ', 400, None),
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
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
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
