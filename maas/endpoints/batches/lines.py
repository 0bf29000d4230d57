"""The Batch API's rules: a batch input file read and checked line by line, the request each line
makes, and the output and error files of a finished batch."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from maas.edge.http import validation_error
from maas.endpoints.batches.protocol import (
    BATCH_ENDPOINTS,
    BatchOutputLine,
    BatchRequestLine,
    BatchResponseData,
)
from maas.endpoints.encoding.protocol import EmbeddingRequest
from maas.endpoints.generation.protocol import CompletionRequest
from maas.protocol.base import new_id
from maas.protocol.chat import ChatCompletionRequest
from maas.protocol.errors import InvalidRequestError, MaasError, ModelNotFoundError
from maas.storage.files import jsonl_lines

MAX_BATCH_LINES = 50_000
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}
assert set(REQUEST_MODELS) == set(BATCH_ENDPOINTS)


def request_of(url: str, body: dict[str, Any]) -> Any:
    """The wire request of one batch line (400 if it is not a valid, non-streamed request)."""
    if url not in REQUEST_MODELS:
        raise InvalidRequestError(f"url must be one of {', '.join(BATCH_ENDPOINTS)}.", "url")
    try:
        request = REQUEST_MODELS[url].model_validate(body)
    except ValidationError as exc:
        error = validation_error(exc.errors())
        raise InvalidRequestError(f"body: {error.message}", f"body.{error.param}" if error.param else "body") from None
    if getattr(request, "stream", False):
        raise InvalidRequestError("A batch request cannot stream: leave out `stream`.", "body.stream")
    return request


def read_batch_input(content: bytes, endpoint: str) -> list[BatchRequestLine]:
    """The lines of a batch input file, each a valid request with a unique ``custom_id``; the
    first bad line is a 400 that names it. A line may call any of :data:`BATCH_ENDPOINTS`, as in
    vLLM's batch runner (``endpoint`` is recorded; OpenAI's service wants every line on it)."""
    lines: list[BatchRequestLine] = []
    seen: set[str] = set()
    for number, text in enumerate(jsonl_lines(content.decode("utf-8", errors="replace")), start=1):
        if not text.strip():
            continue
        line = _line(number, text, endpoint)
        if line.custom_id in seen:
            raise _bad_line(number, f"custom_id {line.custom_id!r} is used twice.")
        seen.add(line.custom_id)
        lines.append(line)
        if len(lines) > MAX_BATCH_LINES:
            raise InvalidRequestError(f"A batch has at most {MAX_BATCH_LINES} requests.", "input_file_id")
    if not lines:
        raise InvalidRequestError("The batch input file has no requests.", "input_file_id")
    return lines


def checked_batch_input(content: bytes) -> list[BatchRequestLine]:
    """The lines of an input file that :func:`read_batch_input` accepted when its batch was
    created (a stored file never changes), decoded only: the requests are not checked again (the
    batch's runner reads them so; each is checked when it is sent)."""
    text = content.decode("utf-8", errors="replace")
    return [BatchRequestLine.model_validate_json(line) for line in jsonl_lines(text) if line.strip()]


def _line(number: int, text: str, endpoint: str) -> BatchRequestLine:
    try:
        line = BatchRequestLine.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        reason = validation_error(exc.errors()).message if isinstance(exc, ValidationError) else "not JSON"
        raise _bad_line(number, f"{reason} (each line: custom_id, method POST, url, body).") from None
    try:
        request_of(line.url, line.body)
    except InvalidRequestError as error:
        raise _bad_line(number, error.message) from None
    return line


def _bad_line(number: int, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"Line {number} of the input file: {reason}", "input_file_id",
                               code="invalid_batch_line")


def check_models(lines: Iterable[BatchRequestLine], served: dict[str, set[str]]) -> None:
    """A 404 naming the first line whose model is not served for its endpoint."""
    for number, line in enumerate(lines, start=1):
        model = str(line.body.get("model"))
        if model not in served.get(line.url, set()):
            raise ModelNotFoundError(
                f"Request {number} of the input file ({line.custom_id!r}): the model '{model}' is not "
                f"served for {line.url} (served: {', '.join(sorted(served.get(line.url, ()))) or 'none'}).",
                "input_file_id")


def models_of(lines: Iterable[BatchRequestLine]) -> list[str]:
    """The models a batch's requests use, each once, in first-seen order."""
    return list(dict.fromkeys(str(line.body.get("model")) for line in lines))


def answered(custom_id: str, status: int, body: dict[str, Any]) -> BatchOutputLine:
    """The output line of a request that got an answer (200, or a client error such as 400)."""
    return BatchOutputLine(custom_id=custom_id, response=BatchResponseData(
        status_code=status, request_id=new_id("req"), body=body))


def failed(custom_id: str, error: MaasError) -> BatchOutputLine:
    """The error line of a request that could not be answered."""
    return BatchOutputLine(custom_id=custom_id, error={"code": error.code or error.error_type,
                                                       "message": error.message})


def expired(custom_id: str) -> BatchOutputLine:
    """The error line of a request not run before its batch's completion window ended (OpenAI's)."""
    return BatchOutputLine(custom_id=custom_id, error={
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired."})


def output_files(lines: list[BatchRequestLine], results: Iterable[BatchOutputLine]) -> tuple[str, str]:
    """The output file (answered with 200) and the error file (the rest), in input order."""
    by_id = {line.custom_id: line for line in results}
    done = [by_id[line.custom_id] for line in lines if line.custom_id in by_id]
    ok = [r for r in done if r.succeeded]
    bad = [r for r in done if not r.succeeded]
    return "".join(r.model_dump_json() + "\n" for r in ok), "".join(r.model_dump_json() + "\n" for r in bad)
