"""The Batch API's operations over the file and batch stores: uploads, batches, their owners.

Each file and batch belongs to the API key that made it (none without keys): another key gets a
404 for it, as for an id that does not exist. Running a batch is the runner's
(``deployments/batch_runner.py``); this class only starts it, through ``start_runner``.

What one key may hold is capped (:class:`BatchLimits`), so one tenant cannot fill the disk or
the cluster for the others: batches not yet ended (one more is a 429 with ``Retry-After``, as
OpenAI answers a rate limit: it passes once a batch ends) and bytes of stored files (an upload
past them is a 413, the status of an upload that cannot be stored; OpenAI answers its storage
limit with a 4xx on the upload too). Each cap is checked where the file or batch is added, under
its store's lock, so requests of one key that run at once (in threads, or in several ingress
replicas) cannot pass it together; a key at its open batches gets its 429 before its input file
is read. Without keys, every file and batch has the owner None: the caps are the whole
service's. Files and batches end: a file past its ``expires_at`` is deleted when it is next
looked at, and by a sweep at each upload and batch creation (never one that an active batch
reads); a batch past its completion window is ended ``expired`` by its runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel

from maas.endpoints.batches import lines as rules
from maas.endpoints.batches.protocol import (
    BatchCreateRequest,
    BatchList,
    BatchObject,
    BatchRequestLine,
    FileDeleted,
    FileList,
    FileObject,
)
from maas.endpoints.batches.store import BatchStore, FileStore
from maas.protocol.base import now
from maas.protocol.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
)

if TYPE_CHECKING:
    from maas.config import IngressConfig
    from maas.edge.key_file import ApiKey

StartRunner = Callable[[BatchObject], None]
KeyOf = Callable[[str | None], "ApiKey | None"]

MIB = 1024 * 1024
COMPLETION_WINDOW_S = 24 * 3600
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
"""The statuses of a batch that has not ended: it counts against its key's open batches, and its
input file cannot be deleted."""
OPEN_BATCHES_RETRY_S = 60.0


class BatchLimits(BaseModel):
    """What one owner (an API key; the whole service without keys) may hold."""

    max_file_bytes: int = 100 * MIB
    max_open_batches: int = 8
    max_storage_bytes: int = 256 * MIB
    file_expiry_s: int | None = 30 * 24 * 3600

    @classmethod
    def of(cls, config: IngressConfig) -> BatchLimits:
        return cls(max_file_bytes=config.max_file_bytes, max_open_batches=config.max_open_batches_per_key,
                   max_storage_bytes=config.max_storage_mib_per_key * MIB, file_expiry_s=config.file_expiry_s)

    def for_key(self, key: ApiKey | None) -> BatchLimits:
        """These limits with the key's own caps (``max_open_batches``, ``max_storage_mib``)."""
        update: dict[str, int] = {}
        if key is not None and key.max_open_batches is not None:
            update["max_open_batches"] = key.max_open_batches
        if key is not None and key.max_storage_mib is not None:
            update["max_storage_bytes"] = key.max_storage_mib * MIB
        return self.model_copy(update=update)


class BatchApi:
    def __init__(self, files: FileStore, batches: BatchStore, start_runner: StartRunner,
                 limits: BatchLimits | None = None, key_of: KeyOf | None = None,
                 clock: Callable[[], int] = now) -> None:
        """``key_of``: the API key of an owner (its caps; None: the defaults of ``limits``)."""
        self.files, self.batches = files, batches
        self.start_runner = start_runner
        self.limits = limits or BatchLimits()
        self.key_of = key_of or (lambda _: None)
        self.clock = clock

    def limits_of(self, owner: str | None) -> BatchLimits:
        return self.limits.for_key(self.key_of(owner))

    # ---------------------------------------------------------------- files

    def upload(self, content: bytes | Iterable[bytes], filename: str, purpose: str,
               owner: str | None) -> FileObject:
        """Store a file from its bytes or its chunks, written to disk as they come; over the file
        size limit or the owner's storage a 413, as soon as a chunk passes it."""
        if purpose != "batch":
            raise InvalidRequestError("purpose must be 'batch' (the files of this service are "
                                      "batch inputs).", "purpose")
        self.sweep()
        limits = self.limits_of(owner)
        room = limits.max_storage_bytes - self.stored_bytes(owner)  # stops a large upload early
        chunks = [content] if isinstance(content, bytes) else content
        expires_at = self.clock() + limits.file_expiry_s if limits.file_expiry_s else None
        return self.files.create(self._checked(chunks, room, limits), filename[:255] or "input.jsonl",
                                 purpose, owner, expires_at,
                                 admit=lambda size: self._check_storage(owner, size, limits))

    def _checked(self, chunks: Iterable[bytes], room: int, limits: BatchLimits) -> Iterator[bytes]:
        """The chunks, stopped by a 413 at the first one past a limit, or a 400 if all are blank."""
        size, blank = 0, True
        for chunk in chunks:
            size += len(chunk)
            if size > limits.max_file_bytes:
                raise PayloadTooLargeError(f"The file is larger than the limit of {limits.max_file_bytes} bytes.",
                                           "file")
            if size > room:
                raise _over_storage(limits, room)
            blank = blank and not chunk.strip()
            yield chunk
        if blank:
            raise InvalidRequestError("The file is empty.", "file")

    def _check_storage(self, owner: str | None, size: int, limits: BatchLimits) -> None:
        """413 unless ``size`` more bytes fit the owner's storage now. Called under the file
        store's lock, where files are added: uploads of one key that run at once cannot together
        pass its quota (each saw the room of before the others when it started)."""
        room = limits.max_storage_bytes - self.stored_bytes(owner)
        if size > room:
            raise _over_storage(limits, room)

    def stored_bytes(self, owner: str | None) -> int:
        """The bytes of the owner's files (inputs and batch outputs)."""
        return sum(f.bytes for f, o in self.files.list() if o == owner)

    def file(self, file_id: str, owner: str | None) -> FileObject:
        """The file (404 if it is another owner's, or expired: then it is deleted)."""
        try:
            file, file_owner = self.files.get(file_id)
        except KeyError:
            file_owner, file = "", None
        if file is not None and self._expired(file) and self._active_reader(file_id) is None:
            self.files.delete(file_id)
            file = None
        if file is None or file_owner != owner:
            raise NotFoundError(f"No file with id '{file_id}'.", "file_id", code="file_not_found")
        return file

    def content(self, file_id: str, owner: str | None) -> bytes:
        self.file(file_id, owner)
        return self.files.content(file_id)

    def list_files(self, owner: str | None, purpose: str | None = None) -> FileList:
        self.sweep()
        return FileList(data=[f for f, o in self.files.list()
                              if o == owner and (purpose is None or f.purpose == purpose)])

    def delete(self, file_id: str, owner: str | None) -> FileDeleted:
        """Delete a file; the input of an active batch is a 409 (the batch still reads it)."""
        self.file(file_id, owner)
        reader = self._active_reader(file_id)
        if reader is not None:
            raise ConflictError(f"The file '{file_id}' is the input of batch '{reader.id}', which is "
                                f"{reader.status}: cancel the batch or wait for it to end.", "file_id",
                                code="file_in_use")
        self.files.delete(file_id)
        return FileDeleted(id=file_id)

    def _expired(self, item: FileObject | BatchObject) -> bool:
        return item.expires_at is not None and item.expires_at <= self.clock()

    def _active_reader(self, file_id: str) -> BatchObject | None:
        """A batch not yet ended whose input is the file, if any."""
        return next((b for b, _ in self.batches.list() if b.input_file_id == file_id and b.status in ACTIVE),
                    None)

    def sweep(self) -> None:
        """Delete the expired files no active batch reads; hand the active batches past their
        completion window to their runner (started again if lost), which ends them ``expired``."""
        batches = [b for b, _ in self.batches.list()]
        in_use = {b.input_file_id for b in batches if b.status in ACTIVE}
        for file, _ in self.files.list():
            if self._expired(file) and file.id not in in_use:
                self.files.delete(file.id)
        for batch in batches:
            if batch.status in ACTIVE and self._expired(batch):
                self.start_runner(batch)

    # ---------------------------------------------------------------- batches

    def input_lines(self, request: BatchCreateRequest, owner: str | None) -> list[BatchRequestLine]:
        """The batch's input file read and checked line by line, once per request: admission
        (:meth:`models_of`) and :meth:`create` share the lines (CPU-heavy for a large file). An
        owner at its open batches is a 429 before the file is read."""
        if request._input_lines is None:
            self._check_open_batches(owner)
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
        self.sweep()
        lines = self.input_lines(request, owner)  # a 429 first when the owner is at its open batches
        if served is not None:
            rules.check_models(lines, served)
        if request.metadata and len(request.metadata) > 16:
            raise InvalidRequestError("metadata has at most 16 pairs.", "metadata")
        batch = BatchObject(endpoint=request.endpoint, input_file_id=request.input_file_id,
                            metadata=request.metadata, expires_at=self.clock() + COMPLETION_WINDOW_S)
        batch.request_counts.total = len(lines)
        # checked again where batches are added: batches of one key created at once cannot pass the cap
        self.batches.create(batch, owner, admit=lambda: self._check_open_batches(owner))
        self.start_runner(batch)
        return batch

    def _check_open_batches(self, owner: str | None) -> None:
        """429 when the owner has as many batches not yet ended as it may."""
        cap = self.limits_of(owner).max_open_batches
        open_ids = [b.id for b, o in self.batches.list() if o == owner and b.status in ACTIVE]
        if len(open_ids) >= cap:
            raise RateLimitError(f"{len(open_ids)} batches of this API key have not ended (at most {cap}): "
                                 "wait for one to end, or cancel one.", code="too_many_open_batches",
                                 retry_after_s=OPEN_BATCHES_RETRY_S)

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
                batch.status, batch.cancelling_at = "cancelling", self.clock()

        return self.batches.update(batch_id, cancelling)


def _over_storage(limits: BatchLimits, room: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file does not fit the storage quota of {limits.max_storage_bytes // MIB} MiB "
        f"({max(room, 0)} bytes left): delete files first.", "file", code="storage_quota_exceeded")
