"""The Batch API's operations over the file and batch stores: uploads, batches, their owners.

Each file and batch belongs to the API key that made it (none without keys): another key gets a
404 for it, as for an id that does not exist. Running a batch is the runner's
(``deployments/batch_runner.py``); this class only starts it, through ``start_runner``.
"""

from __future__ import annotations

from collections.abc import Callable

from maas.endpoints import batches as rules
from maas.storage.batch_store import BatchStore, FileStore
from maas.wire.batch_schemas import (
    BatchCreateRequest,
    BatchList,
    BatchObject,
    BatchRequestLine,
    FileDeleted,
    FileList,
    FileObject,
)
from maas.wire.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from maas.wire.schemas import now

StartRunner = Callable[[BatchObject], None]


class BatchApi:
    def __init__(self, files: FileStore, batches: BatchStore, start_runner: StartRunner,
                 max_file_bytes: int) -> None:
        self.files, self.batches = files, batches
        self.start_runner = start_runner
        self.max_file_bytes = max_file_bytes

    # ---------------------------------------------------------------- files

    def upload(self, content: bytes, filename: str, purpose: str, owner: str | None) -> FileObject:
        if purpose != "batch":
            raise InvalidRequestError("purpose must be 'batch' (the files of this service are "
                                      "batch inputs).", "purpose")
        if len(content) > self.max_file_bytes:
            raise PayloadTooLargeError(f"The file is larger than the limit of {self.max_file_bytes} bytes.")
        if not content.strip():
            raise InvalidRequestError("The file is empty.", "file")
        return self.files.create(content, filename[:255] or "input.jsonl", purpose, owner)

    def file(self, file_id: str, owner: str | None) -> FileObject:
        try:
            file, file_owner = self.files.get(file_id)
        except KeyError:
            file_owner, file = "", None
        if file is None or file_owner != owner:
            raise NotFoundError(f"No file with id '{file_id}'.", "file_id", code="file_not_found")
        return file

    def content(self, file_id: str, owner: str | None) -> bytes:
        self.file(file_id, owner)
        return self.files.content(file_id)

    def list_files(self, owner: str | None, purpose: str | None = None) -> FileList:
        return FileList(data=[f for f, o in self.files.list()
                              if o == owner and (purpose is None or f.purpose == purpose)])

    def delete(self, file_id: str, owner: str | None) -> FileDeleted:
        self.file(file_id, owner)
        self.files.delete(file_id)
        return FileDeleted(id=file_id)

    # ---------------------------------------------------------------- batches

    def input_lines(self, request: BatchCreateRequest, owner: str | None) -> list[BatchRequestLine]:
        """The batch's input file read and checked line by line, once per request: admission
        (:meth:`models_of`) and :meth:`create` share the lines (CPU-heavy for a large file)."""
        self.file(request.input_file_id, owner)  # another key's file is a 404, read or not
        if request._input_lines is None:
            content = self.files.content(request.input_file_id)
            request._input_lines = rules.read_batch_input(content, request.endpoint)
        return request._input_lines

    def models_of(self, request: BatchCreateRequest, owner: str | None) -> list[str]:
        """The models the batch's requests use (what its key must allow), its input checked."""
        return rules.models_of(self.input_lines(request, owner))

    def create(self, request: BatchCreateRequest, owner: str | None,
               served: dict[str, set[str]] | None = None) -> BatchObject:
        """A new batch of the file's requests, started; ``served``: the models of each endpoint
        (a line naming another is a 404 that names it)."""
        lines = self.input_lines(request, owner)
        if served is not None:
            rules.check_models(lines, served)
        if request.metadata and len(request.metadata) > 16:
            raise InvalidRequestError("metadata has at most 16 pairs.", "metadata")
        batch = BatchObject(endpoint=request.endpoint, input_file_id=request.input_file_id,
                            metadata=request.metadata, expires_at=now() + 24 * 3600)
        batch.request_counts.total = len(lines)
        self.batches.create(batch, owner)
        self.start_runner(batch)
        return batch

    def batch(self, batch_id: str, owner: str | None) -> BatchObject:
        """The batch now (its runner started again if it was lost)."""
        try:
            batch, batch_owner = self.batches.get(batch_id)
        except KeyError:
            batch, batch_owner = None, ""
        if batch is None or batch_owner != owner:
            raise NotFoundError(f"No batch with id '{batch_id}'.", "batch_id", code="batch_not_found")
        self.start_runner(batch)
        return batch

    def list_batches(self, owner: str | None, limit: int = 20, after: str | None = None) -> BatchList:
        mine = [b for b, o in self.batches.list() if o == owner]
        if after is not None:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1:] if after in ids else []
        page = mine[:limit]
        return BatchList(data=page, first_id=page[0].id if page else None,
                         last_id=page[-1].id if page else None, has_more=len(mine) > limit)

    def cancel(self, batch_id: str, owner: str | None) -> BatchObject:
        """Stop the batch: no new request starts; those running finish; then it is ``cancelled``."""
        self.batch(batch_id, owner)

        def cancelling(batch: BatchObject) -> None:
            if batch.status in ("validating", "in_progress"):
                batch.status, batch.cancelling_at = "cancelling", now()

        return self.batches.update(batch_id, cancelling)
