"""The API key file and its store: hashed keys, which models each may use, its quotas.

Keys live in a YAML file that the service re-reads when it changes, so keys are added and
revoked without a restart. The file holds only SHA-256 digests of the secrets; a secret is
shown once, when :func:`add_key` creates it. The format is in :mod:`maas.edge.auth`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from maas.config import StrictModel
from maas.protocol.errors import AuthenticationError
from maas.storage.files import locked, write_atomic

logger = logging.getLogger(__name__)

KEY_PREFIX = "maas-"
RELOAD_INTERVAL_S = 1.0

Clock = Callable[[], float]


class KeyFileError(ValueError):
    """The API key file is missing, unreadable or invalid (an operator error, not a client one)."""


# ---------------------------------------------------------------------------------- key file


class ApiKey(StrictModel):
    """One API key: its public id, the digest of its secret, what it may use, its quotas."""

    id: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                    description="Public name of the key (letters, digits, '.', '_', '-').")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$",
                        description="Hex SHA-256 digest of the secret key (see hash_key).")
    models: list[str] = Field(default_factory=list, description="Models it may use; empty: all.")
    requests_per_minute: int | None = Field(None, ge=1, description="Requests in any 60 s; absent: no cap.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Tokens in any 60 s; absent: no cap.")
    max_open_batches: int | None = Field(None, ge=1, description="Batches not yet ended at once; "
                                         "absent: ingress.max_open_batches_per_key.")
    max_storage_mib: int | None = Field(None, ge=1, description="MiB of stored files; absent: "
                                        "ingress.max_storage_mib_per_key.")
    max_in_flight_requests: int | None = Field(None, ge=1, description="Requests in flight at once; "
                                               "absent: ingress.fair_share.max_in_flight_requests.")
    max_in_flight_sequences: int | None = Field(None, ge=1, description="Generated sequences in flight "
                                                "at once on each generator; absent: ingress.fair_share."
                                                "sequence_share of its slots.")
    revoked: bool = Field(False, description="A revoked key is refused (401).")
    admin: bool = Field(False, description="May also read the operator routes (/metrics); "
                        "other keys get 403 there.")

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower_hex(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("models", mode="before")
    @classmethod
    def _none_is_all(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def is_limited(self) -> bool:
        """Whether the key has a requests or tokens per minute limit."""
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def allows(self, model: str) -> bool:
        """Whether this key may use ``model``."""
        return not self.models or model in self.models


class KeyFile(StrictModel):
    """The whole key file: every key, ids and digests unique."""

    keys: list[ApiKey] = Field(default_factory=list, description="The API keys.")

    @field_validator("keys", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _unique(self) -> KeyFile:
        for what, values in (("ids", [k.id for k in self.keys]), ("digests", [k.sha256 for k in self.keys])):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"key {what} must be unique: {repeated}")
        return self


def hash_key(secret: str) -> str:
    """The hex SHA-256 digest of a secret key, as the key file stores it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random secret key (``maas-`` + 43 URL-safe characters) and its digest."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_key(secret)


def parse_key_file(text: str, source: str = "<api keys>") -> KeyFile:
    """Validate the text of a key file; :class:`KeyFileError` says what is wrong and where."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{source}: not valid YAML: {exc}") from None
    if isinstance(data, list):
        data = {"keys": data}
    try:
        return KeyFile.model_validate(data or {})
    except ValidationError as exc:
        raise KeyFileError(f"{source}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            allowed = ApiKey.model_fields if len(loc) > 1 else KeyFile.model_fields
            message = f"unknown field (allowed: {', '.join(allowed)})"
        where = ".".join(str(part) for part in loc)
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def read_key_file(path: str | Path) -> KeyFile:
    """Read and validate a key file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the API key file: {exc.strerror or exc}") from None
    return parse_key_file(text, str(path))


def write_key_file(path: str | Path, keys: KeyFile) -> None:
    """Replace a key file atomically (temporary file + ``os.replace``), mode 0600; ``admin`` is
    written only for admin keys."""
    path = Path(path)
    data = keys.model_dump(exclude_none=True)
    for key in data["keys"]:  # a file without admin keys stays readable by services that predate them
        if not key["admin"]:
            del key["admin"]
    text = "# maas API keys: SHA-256 digests of the secrets, never the secrets.\n" + yaml.safe_dump(
        data, sort_keys=False)
    write_atomic(path, text, mode=0o600)


# ---------------------------------------------------------------------------------- key store


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does (mtime, size, inode); None when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class KeyStore:
    """The API keys of a key file, re-read when the file changes.

    The file is checked at most every ``reload_interval_s`` seconds. A file that breaks later
    (invalid, missing) keeps the last good keys and logs one warning per change.
    """

    def __init__(self, path: str | Path, reload_interval_s: float = RELOAD_INTERVAL_S,
                 clock: Clock = time.monotonic) -> None:
        self.path = Path(path)
        self.reload_interval_s = reload_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = _file_stamp(self.path)
        self._keys = read_key_file(self.path).keys
        self._checked_at = clock()

    @property
    def keys(self) -> list[ApiKey]:
        """The current keys (re-read first if the file changed)."""
        self.refresh()
        return list(self._keys)

    def refresh(self, force: bool = False) -> None:
        """Re-read the file if it changed since the last look (if due, or ``force``)."""
        now = self._clock()
        with self._lock:
            if not force and now - self._checked_at < self.reload_interval_s:
                return
            self._checked_at = now
            stamp = _file_stamp(self.path)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                keys = read_key_file(self.path).keys
            except KeyFileError as exc:
                logger.warning("%s; keeping the last good API keys (%d)", exc, len(self._keys))
                return
            self._keys = keys
            logger.info("reloaded %d API keys from %s", len(keys), self.path)

    def lookup(self, secret: str) -> ApiKey | None:
        """The key whose digest matches ``secret`` (revoked or not), or None.

        Compares with every stored digest in constant time, with no early exit on a match.
        """
        digest = hash_key(secret).encode()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256.encode()):
                found = key
        return found

    def authenticate(self, secret: str | None) -> ApiKey:
        """The live key of ``secret``; :class:`AuthenticationError` if missing, unknown or revoked."""
        if not secret:
            raise AuthenticationError(
                "You didn't provide an API key. Send it in an Authorization header using Bearer "
                "auth (Authorization: Bearer YOUR_KEY), or in an x-api-key header.")
        key = self.lookup(secret)
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        if key.revoked:
            raise AuthenticationError("This API key has been revoked.")
        return key


# ---------------------------------------------------------------------------------- CLI helpers


def add_key(path: str | Path, key_id: str, models: Iterable[str] | None = None,
            rpm: int | None = None, tpm: int | None = None, admin: bool = False,
            max_open_batches: int | None = None, max_storage_mib: int | None = None,
            max_in_flight: int | None = None, max_in_flight_sequences: int | None = None) -> str:
    """Add a new key to the key file (created if missing); print its secret once and return it.

    ``admin``: the key may also read the operator routes (``/metrics``); ``max_open_batches``,
    ``max_storage_mib``: its Batch API caps, ``max_in_flight``, ``max_in_flight_sequences``: its fair
    share (:mod:`maas.edge.fair_share`; absent: the config's defaults). The file is read and
    replaced under its lock (:func:`key_file_lock`): concurrent adds and revokes all land.

    The secret goes to stdout alone (so it can be captured); the note about it to stderr.
    """
    secret, digest = new_key()
    key = _validated_key({"id": key_id, "sha256": digest, "models": list(models or []),
                          "requests_per_minute": rpm, "tokens_per_minute": tpm, "admin": admin,
                          "max_open_batches": max_open_batches, "max_storage_mib": max_storage_mib,
                          "max_in_flight_requests": max_in_flight,
                          "max_in_flight_sequences": max_in_flight_sequences})
    with locked(key_file_lock(path)):
        keys = read_key_file(path) if Path(path).exists() else KeyFile()
        if any(k.id == key_id for k in keys.keys):
            raise KeyFileError(f"{path}: a key with id {key_id!r} already exists")
        write_key_file(path, KeyFile(keys=[*keys.keys, key]))
    print(secret)
    print(f"[maas] API key {key_id!r} added to {path}. Store the secret above now: "
          "it is shown only this once.", file=sys.stderr)
    return secret


def revoke_key(path: str | Path, key_id: str) -> ApiKey:
    """Mark the key ``key_id`` revoked in the key file (under its lock); returns the revoked key."""
    with locked(key_file_lock(path)):
        keys = read_key_file(path)
        known = [k.id for k in keys.keys]
        if key_id not in known:
            raise KeyFileError(f"{path}: no key with id {key_id!r} (known: {', '.join(known) or 'none'})")
        updated = [k.model_copy(update={"revoked": True}) if k.id == key_id else k for k in keys.keys]
        write_key_file(path, KeyFile(keys=updated))
    return updated[known.index(key_id)]


def key_file_lock(path: str | Path) -> Path:
    """The lock file of a key file (beside it, hidden): held while the file is read and replaced."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def list_keys(path: str | Path) -> list[ApiKey]:
    """Every key of the key file, revoked ones included."""
    return read_key_file(path).keys


def format_keys(keys: Iterable[ApiKey]) -> str:
    """A plain-text table of keys for the command line (digests shortened)."""
    rows = [("ID", "STATUS", "RPM", "TPM", "SHA256", "MODELS")]
    rows += [(k.id, ("revoked" if k.revoked else "active") + (",admin" if k.admin else ""), str(k.requests_per_minute or "-"),
              str(k.tokens_per_minute or "-"), k.sha256[:12], ",".join(k.models) or "*") for k in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _validated_key(data: dict[str, Any]) -> ApiKey:
    try:
        return ApiKey.model_validate(data)
    except ValidationError as exc:
        raise KeyFileError(f"invalid key: {_describe(exc)}") from None
