"""A client's mistake inside a replica is logged as one line; a server failure keeps its traceback."""

from __future__ import annotations

import logging

import pytest

from maas.wire.errors import EngineError, InvalidRequestError, log_client_errors_as_one_line


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
    assert (record.exc_info is None) == one_line
    if one_line:
        assert record.getMessage() == "Request refused: 400 invalid_value: temperature: too high"
    assert len(logging.getLogger("maas-test-replica").filters) == 1
