"""The Batch and Files API methods of the ingress deployment (:class:`deployments.ingress.MaasIngress`
inherits them): uploads, batches, and one request of a batch admitted and charged as over HTTP.

The rules are the batches family's (``maas/endpoints/batches/``); these methods hold the Serve
parts: the runner actor started per batch, and the ingress's own operations a batch line calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from ray import serve

from deployments.batch_runner import ensure_runner
from maas.edge.admission import admit_models
from maas.edge.auth import KEY_SCOPE_KEY
from maas.edge.fair_share import key_turn
from maas.endpoints.batches import lines as batch_rules
from maas.endpoints.batches.protocol import BatchCreateRequest, BatchObject, FileObject
from maas.protocol.errors import MaasError, error_body


class BatchMethods:
    """The ingress's Batch API: it expects ``config``, ``batch_api``, ``key_auth``, ``preparation``,
    ``generator_configs``, ``encoder_models``, ``_served``, ``models_used`` and the operations
    ``chat``, ``completions`` and ``embeddings`` of :class:`deployments.ingress.MaasIngress`."""

    def _start_batch_runner(self, batch: BatchObject) -> None:
        ensure_runner(serve.get_replica_context().app_name, self.config.batch_dir, batch,
                      self.config.ingress.batch_concurrency, self.config.ingress.file_expiry_s)

    def create_file(self, content: bytes | Iterable[bytes], filename: str, purpose: str = "batch",
                    owner: str | None = None) -> FileObject:
        """Store a batch input file (JSONL, one request a line), its bytes or its chunks, written
        to disk as they come (blocking: the route calls it in a worker thread); ``owner``: an API key id."""
        return self.batch_api.upload(content, filename, purpose, owner)

    def file_content(self, file_id: str, owner: str | None = None) -> bytes:
        """A file's bytes: a batch input, or a batch's output or error file."""
        return self.batch_api.content(file_id, owner)

    async def create_batch(self, request: BatchCreateRequest, owner: str | None = None) -> BatchObject:
        """Start a batch of the requests of an uploaded file (checked line by line first)."""
        served = {"/v1/chat/completions": set(self.generator_configs),
                  "/v1/completions": set(self.generator_configs), "/v1/embeddings": set(self.encoder_models)}
        # off the loop: the file read once (if admission has not), the store's lock for the cap
        return await self.preparation.run(self.batch_api.create, request, owner, served)

    def retrieve_batch(self, batch_id: str, owner: str | None = None) -> BatchObject:
        """A batch with its status and live request counts."""
        return self.batch_api.batch(batch_id, owner)

    def cancel_batch(self, batch_id: str, owner: str | None = None) -> BatchObject:
        """Stop a batch: requests not started are not sent; the batch ends ``cancelled``."""
        return self.batch_api.cancel(batch_id, owner)

    async def batch_call(self, key_id: str | None, url: str,
                         body: dict[str, Any]) -> tuple[int, dict[str, Any], float | None]:
        """One request of a batch, admitted and charged to the batch's key as over HTTP:
        ``(status, answer or OpenAI error body, seconds to wait before sending it again)``."""
        try:
            request = batch_rules.request_of(url, body)
            key = self.key_auth.key_by_id(key_id)
            scope = SimpleNamespace(scope={KEY_SCOPE_KEY: key} if key else {}, state=SimpleNamespace())
            if key is not None:
                await self.key_auth.check_request(key)
            admit_models(scope, await self.models_used(request), self._served)
            operation = {"/v1/chat/completions": self.chat, "/v1/completions": self.completions,
                         "/v1/embeddings": self.embeddings}[url]
            with key_turn(key).current():  # its generated sequences count in its key's fair share
                result = await operation(request)
            self.key_auth.charge(scope, result.usage.total_tokens)
            return 200, result.model_dump(mode="json", exclude_none=True), None
        except MaasError as error:
            return int(error.status_code), error_body(error), getattr(error, "retry_after_s", None)
