"""API keys: who may call the service, which models each key may use, and its quotas.

Keys live in a YAML file that the service re-reads when it changes, so keys are added and
revoked without a restart. The file holds only SHA-256 digests of the secrets; a secret is
shown once, when :func:`add_key` creates it. The format (a bare list of keys is read too)::

    keys:
      - id: team-a                         # public name, shown in logs and errors
        sha256: 3f1c...                    # hash_key(secret)
        models: [smollm2-135m-instruct]    # absent or empty: every model
        requests_per_minute: 60            # absent: unlimited
        tokens_per_minute: 20000           # absent: unlimited
        revoked: false

:class:`AuthMiddleware` checks ``Authorization: Bearer <key>`` and the key's quota on every
route but the open ones and puts the key in ``scope["maas.key"]``; routes then call
:func:`authorize_model` before using a model and :meth:`KeyAuth.charge` once usage is known.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from maas.config import StrictModel
from maas.storage.files import write_atomic
from maas.wire.errors import MaasError
from maas.wire.http import error_response

logger = logging.getLogger(__name__)

KEY_PREFIX = "maas-"
KEY_SCOPE_KEY = "maas.key"
OPEN_PATHS = frozenset({"/", "/health"})
OPEN_PREFIXES = ("/static/",)
RELOAD_INTERVAL_S = 1.0
WINDOW_S = 60.0

Clock = Callable[[], float]


# ---------------------------------------------------------------------------------- errors


class AuthenticationError(MaasError):
    """No API key, an unknown one or a revoked one (401)."""

    status_code = HTTPStatus.UNAUTHORIZED
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(MaasError):
    """The API key may not use the requested model (403)."""

    status_code = HTTPStatus.FORBIDDEN
    error_type = "invalid_request_error"
    code = "model_not_allowed"


class RateLimitError(MaasError):
    """The API key is over its requests or tokens per minute (429).

    ``error_type`` is OpenAI's name of the limit hit, ``"requests"`` or ``"tokens"``;
    ``retry_after_s`` is the exact wait until the request would be admitted.
    """

    status_code = HTTPStatus.TOO_MANY_REQUESTS
    error_type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 retry_after_s: float = 1.0, error_type: str = "requests") -> None:
        super().__init__(message, param, code)
        self.retry_after_s = retry_after_s
        self.error_type = error_type

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.param, self.code, self.retry_after_s, self.error_type))


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
    revoked: bool = Field(False, description="A revoked key is refused (401).")

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
    """Replace a key file atomically (temporary file + ``os.replace``), mode 0600."""
    path = Path(path)
    text = "# maas API keys: SHA-256 digests of the secrets, never the secrets.\n" + yaml.safe_dump(
        keys.model_dump(exclude_none=True), sort_keys=False)
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
                "auth (Authorization: Bearer YOUR_KEY).")
        key = self.lookup(secret)
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        if key.revoked:
            raise AuthenticationError("This API key has been revoked.")
        return key


# ---------------------------------------------------------------------------------- rate limits


@dataclass
class _Usage:
    """One key's requests and token charges inside the current window."""

    requests: deque[float] = field(default_factory=deque)
    charges: deque[tuple[float, int]] = field(default_factory=deque)
    tokens: int = 0


class RateLimiter:
    """Per-key requests and tokens per minute over a sliding window: at most N in any 60 s.

    A request is refused while the key's requests in the window reach its limit, or while the
    tokens charged in the window reach its token limit (a response may overdraw it; later
    requests then wait until enough of those tokens leave the window).
    """

    def __init__(self, clock: Clock = time.monotonic, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._clock = clock
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def check_request(self, key: ApiKey) -> None:
        """Admit and count one request of ``key``, or raise :class:`RateLimitError` with the exact wait."""
        if not key.is_limited:
            return
        now = self._clock()
        with self._lock:
            usage = self._current(key.id, now)
            request_wait = self._request_wait(key, usage, now)
            token_wait = self._token_wait(key, usage, now)
            if request_wait is not None or token_wait is not None:
                raise _refusal(key, usage, request_wait, token_wait)
            if key.requests_per_minute is not None:
                usage.requests.append(now)

    def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        """Count the ``tokens`` a finished request of ``key`` used against its tokens per minute."""
        if key.tokens_per_minute is None or tokens <= 0:
            return
        now = self._clock()
        with self._lock:
            usage = self._current(key.id, now)
            usage.charges.append((now, tokens))
            usage.tokens += tokens

    def usage(self, key_id: str) -> tuple[int, int]:
        """Requests counted and tokens charged to ``key_id`` in the current window."""
        with self._lock:
            usage = self._current(key_id, self._clock())
            return len(usage.requests), usage.tokens

    def _current(self, key_id: str, now: float) -> _Usage:
        usage = self._usage.setdefault(key_id, _Usage())
        cutoff = now - self.window_s
        while usage.requests and usage.requests[0] <= cutoff:
            usage.requests.popleft()
        while usage.charges and usage.charges[0][0] <= cutoff:
            usage.tokens -= usage.charges.popleft()[1]
        return usage

    def _request_wait(self, key: ApiKey, usage: _Usage, now: float) -> float | None:
        limit = key.requests_per_minute
        if limit is None or len(usage.requests) < limit:
            return None
        return usage.requests[len(usage.requests) - limit] + self.window_s - now

    def _token_wait(self, key: ApiKey, usage: _Usage, now: float) -> float | None:
        limit = key.tokens_per_minute
        if limit is None or usage.tokens < limit:
            return None
        left = usage.tokens
        for at, tokens in usage.charges:
            left -= tokens
            if left < limit:
                return at + self.window_s - now
        return self.window_s  # unreachable: charges sum to usage.tokens


class _RateLimiterActor:
    """A :class:`RateLimiter` in a Ray actor; a refusal is returned, not raised (no traceback)."""

    def __init__(self) -> None:
        self.limiter = RateLimiter()

    def check_request(self, key: ApiKey) -> RateLimitError | None:
        try:
            self.limiter.check_request(key)
        except RateLimitError as refusal:
            return refusal
        return None

    def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        self.limiter.charge_tokens(key, tokens)

    def usage(self, key_id: str) -> tuple[int, int]:
        return self.limiter.usage(key_id)


class SharedRateLimiter:
    """One key's limits counted across every ingress replica of an application.

    The counts live in one named, detached Ray actor (``maas-rate-limits:<app>``, no CPU reserved)
    that each replica finds or creates, so N replicas give a key its limit, not N times it, and
    the counts outlive a replaced replica. An admitted request of a limited key costs one actor
    call; token charges are sent without waiting.
    """

    NAMESPACE = "maas"

    def __init__(self, app_name: str) -> None:
        self.actor_name = f"maas-rate-limits:{app_name}"
        self._actor: Any = None

    async def check_request(self, key: ApiKey) -> None:
        """Admit and count one request of ``key``, or raise its :class:`RateLimitError`."""
        if not key.is_limited:
            return
        refusal = await self._handle().check_request.remote(key)
        if refusal is not None:
            raise refusal

    def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        if key.tokens_per_minute is not None and tokens > 0:
            self._handle().charge_tokens.remote(key, tokens)

    def _handle(self) -> Any:
        if self._actor is None:
            import ray

            self._actor = ray.remote(_RateLimiterActor).options(
                name=self.actor_name, namespace=self.NAMESPACE, lifetime="detached",
                get_if_exists=True, num_cpus=0,
            ).remote()
        return self._actor


def _refusal(key: ApiKey, usage: _Usage, request_wait: float | None,
             token_wait: float | None) -> RateLimitError:
    """The 429 for the limit that frees up last."""
    if (token_wait or 0.0) > (request_wait or 0.0):
        kind, label, limit, used = "tokens", "tokens per min (TPM)", key.tokens_per_minute, usage.tokens
        wait = token_wait or 0.0
    else:
        kind, label, limit, used = "requests", "requests per min (RPM)", key.requests_per_minute, len(usage.requests)
        wait = request_wait or 0.0
    return RateLimitError(
        f"Rate limit reached for API key '{key.id}' on {label}: Limit {limit}, Used {used}. "
        f"Please try again in {wait:.3g}s.",
        retry_after_s=wait, error_type=kind,
    )


# ---------------------------------------------------------------------------------- requests


class KeyAuth:
    """The service's API-key checks: a key store (None: no key needed) and the rate limiter.

    The limiter counts in this process, or in one place for all replicas when ``shared`` is set
    (an ingress that can run more than one replica). These are plain attributes, so an app can
    install the middleware at import time and set them later, once its config is known.
    """

    def __init__(self, store: KeyStore | None = None, limiter: RateLimiter | None = None,
                 shared: SharedRateLimiter | None = None) -> None:
        self.store = store
        self.limiter = limiter or RateLimiter()
        self.shared = shared

    @classmethod
    def from_file(cls, path: str | Path | None) -> KeyAuth:
        """Checks against the key file at ``path``; no path: every request passes."""
        return cls(KeyStore(path) if path else None)

    async def admit(self, authorization: str | None) -> ApiKey | None:
        """The caller's key, checked and counted against its quota; None when keys are off."""
        if self.store is None:
            return None
        key = self.store.authenticate(bearer_token(authorization))
        await self.check_request(key)
        return key

    async def check_request(self, key: ApiKey) -> None:
        """Count one request against ``key``'s quota (:class:`RateLimitError` when over it)."""
        if self.shared is not None:
            await self.shared.check_request(key)
        else:
            self.limiter.check_request(key)

    def key_by_id(self, key_id: str | None) -> ApiKey | None:
        """The live key ``key_id``, for work done later on its behalf (a batch's requests); None
        when keys are off or the work has no key. :class:`AuthenticationError` once it is revoked."""
        if self.store is None or key_id is None:
            return None
        key = next((k for k in self.store.keys if k.id == key_id), None)
        if key is None or key.revoked:
            raise AuthenticationError(f"The API key '{key_id}' is revoked or no longer exists.")
        return key

    def charge(self, scope_or_request: Any, tokens: int) -> None:
        """Charge a finished request's tokens to the key that made it (nothing without a key)."""
        key = request_key(scope_or_request)
        if key is not None:
            (self.shared or self.limiter).charge_tokens(key, tokens)


def bearer_token(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header value; None if absent or not Bearer."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_key(scope_or_request: Any) -> ApiKey | None:
    """The key that :class:`AuthMiddleware` admitted for this request (ASGI scope or Request)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    return scope.get(KEY_SCOPE_KEY)


def authorize_model(scope_or_request: Any, model: str) -> None:
    """Raise :class:`PermissionDeniedError` (403) when the request's key may not use ``model``."""
    key = request_key(scope_or_request)
    if key is not None and not key.allows(model):
        raise PermissionDeniedError(f"The API key '{key.id}' may not use the model '{model}'.", "model")


def allowed_models(scope_or_request: Any, models: Iterable[str]) -> list[str]:
    """The ``models`` the request's key may use (all of them without a key), e.g. for /v1/models."""
    key = request_key(scope_or_request)
    return [m for m in models if key is None or key.allows(m)]


def refusal_response(error: MaasError) -> Any:
    """:func:`maas.wire.http.error_response`, plus ``Retry-After`` on 429 and ``WWW-Authenticate`` on 401."""
    response = error_response(error)
    if isinstance(error, RateLimitError):
        response.headers["Retry-After"] = error.retry_after_header
    if isinstance(error, AuthenticationError):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


class AuthMiddleware:
    """Pure ASGI middleware: every route but the open ones needs a valid ``Authorization: Bearer`` key.

    The admitted key goes into ``scope["maas.key"]`` (read it with :func:`request_key`). A refusal
    is the OpenAI error body of the service's one error mapping. With no key store, all pass.
    """

    def __init__(self, app: Any, auth: KeyAuth, open_paths: Iterable[str] = OPEN_PATHS,
                 open_prefixes: Iterable[str] = OPEN_PREFIXES) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self.auth.store is None or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        try:
            scope[KEY_SCOPE_KEY] = await self.auth.admit(_header(scope, b"authorization"))
        except MaasError as error:
            await self._refuse(error, scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _is_open(self, scope: dict[str, Any]) -> bool:
        path = _route_path(scope)
        return path in self.open_paths or path.startswith(self.open_prefixes)

    @staticmethod
    async def _refuse(error: MaasError, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
            return
        await refusal_response(error)(scope, receive, send)


def install_auth_middleware(app: Any, auth: KeyAuth) -> None:
    """Require API keys on ``app`` (whenever ``auth.store`` is set)."""
    app.add_middleware(AuthMiddleware, auth=auth)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _route_path(scope: dict[str, Any]) -> str:
    """The request path below the app's mount point (``root_path``)."""
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


# ---------------------------------------------------------------------------------- CLI helpers


def add_key(path: str | Path, key_id: str, models: Iterable[str] | None = None,
            rpm: int | None = None, tpm: int | None = None) -> str:
    """Add a new key to the key file (created if missing); print its secret once and return it.

    The secret goes to stdout alone (so it can be captured); the note about it to stderr.
    """
    keys = read_key_file(path) if Path(path).exists() else KeyFile()
    if any(k.id == key_id for k in keys.keys):
        raise KeyFileError(f"{path}: a key with id {key_id!r} already exists")
    secret, digest = new_key()
    key = _validated_key({"id": key_id, "sha256": digest, "models": list(models or []),
                          "requests_per_minute": rpm, "tokens_per_minute": tpm})
    write_key_file(path, KeyFile(keys=[*keys.keys, key]))
    print(secret)
    print(f"[maas] API key {key_id!r} added to {path}. Store the secret above now: "
          "it is shown only this once.", file=sys.stderr)
    return secret


def revoke_key(path: str | Path, key_id: str) -> ApiKey:
    """Mark the key ``key_id`` revoked in the key file; returns the revoked key."""
    keys = read_key_file(path)
    known = [k.id for k in keys.keys]
    if key_id not in known:
        raise KeyFileError(f"{path}: no key with id {key_id!r} (known: {', '.join(known) or 'none'})")
    updated = [k.model_copy(update={"revoked": True}) if k.id == key_id else k for k in keys.keys]
    write_key_file(path, KeyFile(keys=updated))
    return updated[known.index(key_id)]


def list_keys(path: str | Path) -> list[ApiKey]:
    """Every key of the key file, revoked ones included."""
    return read_key_file(path).keys


def format_keys(keys: Iterable[ApiKey]) -> str:
    """A plain-text table of keys for the command line (digests shortened)."""
    rows = [("ID", "STATUS", "RPM", "TPM", "SHA256", "MODELS")]
    rows += [(k.id, "revoked" if k.revoked else "active", str(k.requests_per_minute or "-"),
              str(k.tokens_per_minute or "-"), k.sha256[:12], ",".join(k.models) or "*") for k in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _validated_key(data: dict[str, Any]) -> ApiKey:
    try:
        return ApiKey.model_validate(data)
    except ValidationError as exc:
        raise KeyFileError(f"invalid key: {_describe(exc)}") from None
