"""API keys: who may call the service, which models each key may use, and its quotas.

Keys live in a YAML file that the service re-reads when it changes, so keys are added and
revoked without a restart. The file holds only SHA-256 digests of the secrets; a secret is
shown once, when :func:`maas.edge.key_file.add_key` creates it. The format (a bare list of keys is read too)::

    keys:
      - id: team-a                         # public name, shown in logs and errors
        sha256: 3f1c...                    # hash_key(secret)
        models: [smollm2-135m-instruct]    # absent or empty: every model
        requests_per_minute: 60            # absent: unlimited
        tokens_per_minute: 20000           # absent: unlimited
        max_in_flight_requests: 8          # absent: ingress.fair_share's (maas.edge.fair_share)
        max_in_flight_sequences: 16        # per generator; absent: ingress.fair_share's
        revoked: false
        admin: false                       # true: may also read /metrics (`maas keys add --admin`)

:class:`AuthMiddleware` checks ``Authorization: Bearer <key>`` (or ``x-api-key: <key>``, as
Anthropic's clients send it) and the key's quota on every route but the open ones and puts the key
in ``scope["maas.key"]``; routes then call
:func:`authorize_model` before using a model and :meth:`KeyAuth.charge` once usage is known.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.edge.http import ADMIN_PATHS, error_response
from maas.edge.key_file import ApiKey, KeyStore
from maas.protocol.errors import AuthenticationError, MaasError, PermissionDeniedError, RateLimitError

logger = logging.getLogger(__name__)

KEY_SCOPE_KEY = "maas.key"
OPEN_PATHS = frozenset({"/", "/health"})
OPEN_PREFIXES = ("/static/",)
WINDOW_S = 60.0

Clock = Callable[[], float]



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

    async def admit(self, authorization: str | None, api_key: str | None = None) -> ApiKey | None:
        """The caller's key, checked and counted against its quota; None when keys are off. The
        key is read from ``Authorization: Bearer <key>``, else from ``x-api-key`` (Anthropic's)."""
        if self.store is None:
            return None
        key = self.store.authenticate(bearer_token(authorization) or (api_key or "").strip() or None)
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


def require_admin(key: ApiKey | None) -> None:
    """403 unless ``key`` is an admin key (None: the service has no keys, and all may pass)."""
    if key is not None and not key.admin:
        raise PermissionDeniedError(f"The API key '{key.id}' may not read the operator routes: "
                                    "they need an admin key (`maas keys add --admin`).",
                                    code="admin_key_required")


def refusal_response(error: MaasError) -> Any:
    """:func:`maas.edge.http.error_response`, plus ``Retry-After`` on 429 and ``WWW-Authenticate`` on 401."""
    response = error_response(error)
    if isinstance(error, RateLimitError):
        response.headers["Retry-After"] = error.retry_after_header
    if isinstance(error, AuthenticationError):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


class AuthMiddleware:
    """Pure ASGI middleware: every route but the open ones needs a valid ``Authorization: Bearer`` key
    (or ``x-api-key``), and the operator routes (:data:`maas.edge.http.ADMIN_PATHS`, ``/metrics``)
    an admin one.

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
            scope[KEY_SCOPE_KEY] = key = await self.auth.admit(_header(scope, b"authorization"),
                                                               _header(scope, b"x-api-key"))
            if _route_path(scope) in ADMIN_PATHS:
                require_admin(key)
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
