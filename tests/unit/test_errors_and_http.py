"""The one error mapping: statuses, OpenAI bodies, pickling, Ray wrapper unwrapping."""

import pickle

import pytest

from maas.edge.http import http_error, validation_error
from maas.protocol.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
    as_maas_error,
    error_body,
    unwrap,
)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidRequestError("bad", "temperature"), 400, "invalid_value"),
        (ContextLengthExceededError("long", "messages"), 400, "context_length_exceeded"),
        (ModelNotFoundError.for_model("x", "generation", ["a"]), 404, "model_not_found"),
        (ServiceUnavailableError("busy"), 503, "service_unavailable"),
        (EngineError("boom"), 500, "engine_error"),
    ],
)
def test_errors_carry_status_and_openai_body(error, status, code) -> None:
    body = error_body(error)
    assert error.status_code == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code


def test_errors_pickle_across_processes() -> None:
    error = ContextLengthExceededError("too long", "messages")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ContextLengthExceededError
    assert (copy.message, copy.param, copy.code) == ("too long", "messages", "context_length_exceeded")


def test_unknown_errors_hide_details() -> None:
    mapped = as_maas_error(RuntimeError("secret stack detail"))
    assert mapped.status_code == 500
    assert "secret" not in mapped.message


def test_ray_wrapper_is_unwrapped() -> None:
    class Wrapper(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("wrapped")
            self.cause = cause

    inner = ModelNotFoundError("nope", "model")
    assert unwrap(Wrapper(inner)) is inner
    assert as_maas_error(Wrapper(inner)).status_code == 404


def test_validation_error_names_the_parameter() -> None:
    error = validation_error([{"loc": ("body", "temperature"), "msg": "less than or equal to 2", "type": "x"}])
    assert error.param == "temperature"
    assert "temperature" in error.message
    assert validation_error([{"loc": ("body", 1), "msg": "bad", "type": "json_invalid"}]).code == "invalid_json"


def test_http_errors() -> None:
    assert http_error(404, "Not Found").status_code == 404
    assert http_error(405, "Method Not Allowed").status_code == 405
