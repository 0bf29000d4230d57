"""``/v1/files`` and ``/v1/batches``: OpenAI's Batch API shapes (files of requests, batch jobs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr

from maas.protocol.base import Metadata, RequestModel, WireModel, new_id, now

MAX_ID_LENGTH = 128
"""The longest file or batch id a request may name (ours are much shorter)."""

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
"""The endpoints a batch line may call (OpenAI's, as served here)."""

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired",
                      "cancelling", "cancelled"]


class FileObject(WireModel):
    id: str = Field(default_factory=lambda: new_id("file"))
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(default_factory=now)
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["processed"] = "processed"
    expires_at: int | None = Field(None, description="When the file is deleted (unless an active "
                                   "batch reads it then); null: never.")


class FileList(WireModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(WireModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchCreateRequest(RequestModel):
    """``POST /v1/batches``."""

    input_file_id: str = Field(..., min_length=1, max_length=MAX_ID_LENGTH)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"] = "24h"
    metadata: Metadata | None = Field(None, description="Up to 16 pairs (keys up to 64 characters, "
                                      "values up to 512), kept with the batch.")
    _input_lines: list[BatchRequestLine] | None = PrivateAttr(None)
    """The input file's lines once the Batch API has read them (not part of the wire body)."""


class BatchRequestCounts(WireModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchErrorData(WireModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(WireModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorData] = Field(default_factory=list)


class BatchObject(WireModel):
    id: str = Field(default_factory=lambda: new_id("batch"))
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = Field(default_factory=now)
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    metadata: dict[str, str] | None = None


class BatchList(WireModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchRequestLine(RequestModel):
    """One line of a batch input file."""

    custom_id: str = Field(..., min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class BatchResponseData(WireModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchOutputLine(WireModel):
    """One line of a batch's output file (answered) or error file (refused or failed)."""

    id: str = Field(default_factory=lambda: new_id("batch_req"))
    custom_id: str
    response: BatchResponseData | None = None
    error: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        """Answered with 200: a line of the output file (the others go to the error file)."""
        return self.response is not None and self.response.status_code == 200
