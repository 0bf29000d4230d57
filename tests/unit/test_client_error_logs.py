"""A client's mistake inside a replica is logged as one line; a server failure keeps its traceback.
No log line holds what the client sent."""

from __future__ import annotations

import asyncio
import logging

import pytest

from maas.edge.http import error_response, sse_events
from maas.protocol.errors import (
    EngineError,
    InvalidRequestError,
    ModelNotFoundError,
    log_client_errors_as_one_line,
)


@pytest.mark.parametrize("error, one_line", [(InvalidRequestError("temperature: too high", "temperature"), True),
                                              (EngineError("boom"), False)])
def test_serve_request_failures(error: Exception, one_line: bool, caplog: pytest.LogCaptureFixture) -> None:
    log_client_errors_as_one_line("maas-test-replica")
    log_client_errors_as_one_line("maas-test-replica")  # idempotent
    logger = logging.getLogger("maas-test-replica")
    try:
        raise error
    except Exception:
        with caplog.at_level(logging.ERROR, logger="maas-test-replica"):
            logger.exception("Request failed.")
    record = caplog.records[-1]
    assert record.exc_info is None
    if one_line:
        assert record.getMessage() == "Request refused: 400 invalid_value (param temperature)"
        assert record.exc_text is None
    else:  # the stack and the type, without the message
        assert record.exc_text.startswith("Traceback") and "in test_serve_request_failures" in record.exc_text
        assert record.exc_text.endswith("maas.protocol.errors.EngineError") and "boom" not in record.exc_text
    assert len(logging.getLogger("maas-test-replica").filters) == 1


CLIENT_TEXT = "client-text-marker-" + "x" * 100


def test_a_refusal_logs_its_code_not_the_clients_text(caplog: pytest.LogCaptureFixture) -> None:
    log_client_errors_as_one_line("maas-test-replica")
    logger = logging.getLogger("maas-test-replica")
    for error in (ModelNotFoundError.for_model(CLIENT_TEXT, "embeddings", ["m"]),
                  InvalidRequestError(f"metadata.{CLIENT_TEXT}: too long", f"metadata.{CLIENT_TEXT}")):
        try:
            raise error
        except Exception:
            with caplog.at_level(logging.ERROR, logger="maas-test-replica"):
                logger.exception("Request failed.")
    assert [r.getMessage() for r in caplog.records[-2:]] == [
        "Request refused: 404 model_not_found (param model)",
        "Request refused: 400 invalid_value (param metadata)"]


def test_a_server_failure_logs_its_type_and_stack_without_its_message(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise ValueError(f"input_value={CLIENT_TEXT!r}")  # as a pydantic error quotes its input

    async def failing_stream() -> object:
        fail()
        yield None

    try:
        fail()
    except ValueError as exc:
        with caplog.at_level(logging.WARNING, logger="maas.edge.http"):
            response = error_response(exc)
    assert response.status_code == 500

    async def drain() -> list[str]:
        return [event async for event in sse_events(failing_stream())]  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, logger="maas.edge.http"):
        events = asyncio.run(drain())
    assert events[-1] == "data: [DONE]\n\n" and CLIENT_TEXT not in "".join(events)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0] for line in lines] == ["request failed", "stream failed"]
    assert all(line.endswith("builtins.ValueError") and "in fail" in line for line in lines)
    assert all(CLIENT_TEXT not in line and r.exc_info is None for line, r in zip(lines, caplog.records))
