"""The Batch API: ``/v1/files`` (batch inputs and outputs) and ``/v1/batches``, as the openai
client's ``client.files`` and ``client.batches`` use them.

Files and batches belong to the API key that made them. A batch's requests run in the
background (``deployments/batch_runner.py``), each admitted and charged to that key like a
request over HTTP; creating one admits every model its file names.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from maas.edge.admission import admitted
from maas.endpoints.batches.protocol import (
    MAX_ID_LENGTH,
    BatchCreateRequest,
    BatchList,
    BatchObject,
    FileDeleted,
    FileList,
    FileObject,
)
from maas.endpoints.common import ingress_of, new_router, owner_of

router = new_router()

ObjectId = Annotated[str, Path(max_length=MAX_ID_LENGTH)]
"""A file or batch id in a path: a longer one is a 400."""

UPLOAD_CHUNK_BYTES = 1024 * 1024
"""An upload is copied to the store this many bytes at a time (never whole in memory)."""

JSONL_CONTENT: dict[int | str, dict[str, Any]] = {200: {
    "description": "The file's bytes (JSON lines).",
    "content": {"application/jsonl": {"schema": {"type": "string"}}}}}


@router.post("/v1/files", response_model=FileObject)
async def upload_file(request: Request, file: UploadFile = File(..., description="JSON lines."),
                      purpose: str = Form(..., description="`batch`.")) -> FileObject:
    """Upload a batch input: one request a line, `{"custom_id", "method": "POST", "url", "body"}`.

    `multipart/form-data` (as `client.files.create(file=..., purpose="batch")` sends it), up to
    `ingress.max_file_bytes` and within the key's storage quota (`ingress.max_storage_mib_per_key`;
    else 413, code `storage_quota_exceeded`), copied to disk a chunk at a time. The file is deleted
    at its `expires_at` (`ingress.file_expiry_s`). The lines are checked when a batch is created.
    """
    chunks = iter(lambda: file.file.read(UPLOAD_CHUNK_BYTES), b"")  # spooled to disk by the form parser
    return await run_in_threadpool(ingress_of(request).create_file, chunks, file.filename or "input.jsonl",
                                   purpose, owner_of(request))


@router.get("/v1/files", response_model=FileList)
async def list_files(request: Request, purpose: str | None = Query(None)) -> FileList:
    """The files of this API key, newest first."""
    return ingress_of(request).batch_api.list_files(owner_of(request), purpose)


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: ObjectId, request: Request) -> FileObject:
    return ingress_of(request).batch_api.file(file_id, owner_of(request))


@router.get("/v1/files/{file_id}/content", response_class=Response, responses=JSONL_CONTENT)
async def file_content(file_id: ObjectId, request: Request) -> Response:
    """A file's content: a batch's output (`response` per line) or errors (`error` per line)."""
    content = ingress_of(request).file_content(file_id, owner_of(request))
    return Response(content, media_type="application/jsonl")


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: ObjectId, request: Request) -> FileDeleted:
    """Delete a file; the input of a batch that has not ended is a 409 (`file_in_use`)."""
    return ingress_of(request).batch_api.delete(file_id, owner_of(request))


@router.post("/v1/batches", response_model=BatchObject)
@admitted
async def create_batch(body: BatchCreateRequest, request: Request) -> BatchObject:
    """Run the requests of an uploaded file (all to `endpoint`) in the background.

    Every line is checked first (a bad line is a 400 naming it) and every model it names must
    be allowed for the key. The batch sends a bounded number of requests at a time
    (`ingress.batch_concurrency`), each charged to the key; results are in `output_file_id`
    (and `error_file_id`) once it is `completed`, in the order of the input. A key has at most
    `ingress.max_open_batches_per_key` batches not yet ended (else 429, `too_many_open_batches`);
    a batch still running 24 hours after its creation ends `expired`.
    """
    return await ingress_of(request).create_batch(body, owner_of(request))


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(request: Request, limit: int = Query(20, ge=1, le=100),
                       after: str | None = Query(None, max_length=MAX_ID_LENGTH)) -> BatchList:
    """The batches of this API key, newest first."""
    return ingress_of(request).batch_api.list_batches(owner_of(request), limit, after)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def retrieve_batch(batch_id: ObjectId, request: Request) -> BatchObject:
    """A batch with its status and live `request_counts`."""
    return ingress_of(request).retrieve_batch(batch_id, owner_of(request))


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(batch_id: ObjectId, request: Request) -> BatchObject:
    """Stop a batch: requests not yet sent are not; it ends `cancelled` with what was done."""
    return ingress_of(request).cancel_batch(batch_id, owner_of(request))
