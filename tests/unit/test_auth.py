"""API keys: hashing, the key file, live reload, rate limits and the ASGI middleware."""

from __future__ import annotations

import hmac
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from maas.edge import key_file
from maas.edge.auth import (
    AuthMiddleware,
    KeyAuth,
    RateLimiter,
    allowed_models,
    authorize_model,
    request_key,
)
from maas.edge.http import install_error_handlers
from maas.edge.key_file import (
    ApiKey,
    KeyFile,
    KeyFileError,
    KeyStore,
    add_key,
    format_keys,
    hash_key,
    list_keys,
    new_key,
    parse_key_file,
    revoke_key,
    write_key_file,
)
from maas.protocol.errors import AuthenticationError, RateLimitError

GOOD, ONLY_A, SLOW, CAPPED, OLD = "maas-good", "maas-only-a", "maas-slow", "maas-capped", "maas-old"


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key(key_id: str, secret: str, **fields: object) -> ApiKey:
    return ApiKey(id=key_id, sha256=hash_key(secret), **fields)


def write_keys(path: Path, *keys: ApiKey) -> Path:
    write_key_file(path, KeyFile(keys=list(keys)))
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.yaml",
        key("good", GOOD),
        key("only-a", ONLY_A, models=["model-a"]),
        key("slow", SLOW, requests_per_minute=2),
        key("capped", CAPPED, tokens_per_minute=100),
        key("old", OLD, revoked=True),
    )


# ---------------------------------------------------------------------------------- keys and file


def test_new_key_is_prefixed_and_only_its_digest_is_kept() -> None:
    secret, digest = new_key()
    assert secret.startswith("maas-") and len(secret) > 40
    assert digest == hash_key(secret) and len(digest) == 64
    assert new_key()[0] != secret
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_key_file_is_strict_with_clear_messages() -> None:
    digest = hash_key("x")
    with pytest.raises(KeyFileError, match=r"keys\.0\.rpm: unknown field \(allowed: id, sha256, models"):
        parse_key_file(f"keys:\n- id: a\n  sha256: {digest}\n  rpm: 5\n")
    with pytest.raises(KeyFileError, match=r"keys\.0\.sha256"):
        parse_key_file("keys:\n- id: a\n  sha256: not-hex\n")
    with pytest.raises(KeyFileError, match="ids must be unique"):
        parse_key_file(f"keys:\n- {{id: a, sha256: {digest}}}\n- {{id: a, sha256: {hash_key('y')}}}\n")
    with pytest.raises(KeyFileError, match="not valid YAML"):
        parse_key_file("keys: [")


def test_key_file_defaults_and_bare_list() -> None:
    parsed = parse_key_file(f"- id: a\n  sha256: {hash_key('x').upper()}\n  models:\n")
    (only,) = parsed.keys
    assert only.sha256 == hash_key("x") and only.models == [] and not only.revoked
    assert only.requests_per_minute is None and only.tokens_per_minute is None
    assert only.allows("anything")
    assert parse_key_file("").keys == []


def test_lookup_compares_every_digest(key_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(key_path)
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(key_file.hmac, "compare_digest", counting)
    assert store.lookup(GOOD).id == "good"  # the first key matches; every key is still compared
    assert len(calls) == 5
    assert store.lookup("maas-nope") is None
    assert len(calls) == 10


def test_authenticate_refuses_missing_unknown_and_revoked(key_path: Path) -> None:
    store = KeyStore(key_path)
    assert store.authenticate(GOOD).id == "good"
    for secret, message in ((None, "didn't provide"), ("maas-nope", "Incorrect"), (OLD, "revoked")):
        with pytest.raises(AuthenticationError, match=message) as caught:
            store.authenticate(secret)
        assert (caught.value.status_code, caught.value.code) == (401, "invalid_api_key")


def test_store_needs_a_valid_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        KeyStore(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("keys: [{id: a}]")
    with pytest.raises(KeyFileError, match="sha256"):
        KeyStore(tmp_path / "bad.yaml")


def test_keys_are_added_and_revoked_without_restart(key_path: Path, clock: FakeClock) -> None:
    store = KeyStore(key_path, clock=clock)
    secret = add_key(key_path, "new", models=["model-a"], rpm=10)
    assert store.lookup(secret) is None  # not re-checked within the reload interval
    clock.advance(1.0)
    assert store.authenticate(secret).models == ["model-a"]

    revoke_key(key_path, "new")
    clock.advance(1.0)
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate(secret)
    assert store.authenticate(GOOD).id == "good"


def test_broken_file_keeps_the_last_good_keys(key_path: Path, clock: FakeClock,
                                              caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore(key_path, clock=clock)
    key_path.write_text("keys:\n- id: broken\n  colour: red\n")
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="maas.edge.auth"):
        assert store.authenticate(GOOD).id == "good"
        clock.advance(1.0)
        store.refresh()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "colour" in warnings[0] and "keeping the last good" in warnings[0]

    key_path.unlink()
    clock.advance(1.0)
    assert store.authenticate(GOOD).id == "good"

    write_keys(key_path, key("fixed", "maas-fixed"))
    clock.advance(1.0)
    assert [k.id for k in store.keys] == ["fixed"]


def test_cli_helpers_write_atomically_with_mode_0600(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    secret = add_key(path, "team-a", models=["m1"], rpm=5, tpm=1000)
    out, err = capsys.readouterr()
    assert out == secret + "\n" and "only this once" in err
    assert secret not in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == [".keys.yaml.lock", "keys.yaml"]  # no temporary file left

    with pytest.raises(KeyFileError, match="already exists"):
        add_key(path, "team-a")
    with pytest.raises(KeyFileError, match="invalid key: id"):
        add_key(path, "bad id!")
    with pytest.raises(KeyFileError, match="no key with id 'nope'"):
        revoke_key(path, "nope")
    assert revoke_key(path, "team-a").revoked
    (listed,) = list_keys(path)
    assert (listed.id, listed.models, listed.requests_per_minute, listed.tokens_per_minute,
            listed.revoked) == ("team-a", ["m1"], 5, 1000, True)
    assert "team-a" in format_keys([listed]) and "revoked" in format_keys([listed])


def test_maas_keys_add_admin_stores_an_operator_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from maas.cli import build_parser

    path = tmp_path / "keys.yaml"
    for argv in (["keys", "add", "--file", str(path), "--id", "ops", "--admin"],
                 ["keys", "add", "--file", str(path), "--id", "team-a"]):
        args = build_parser().parse_args(argv)
        assert args.func(args) == 0
    assert [(k.id, k.admin) for k in list_keys(path)] == [("ops", True), ("team-a", False)]
    assert path.read_text().count("admin") == 1  # left out of the other keys
    args = build_parser().parse_args(["keys", "list", "--file", str(path)])
    capsys.readouterr()
    args.func(args)
    assert "active,admin" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- rate limits


def test_requests_per_minute_slide_with_an_exact_wait(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    slow = key("slow", SLOW, requests_per_minute=2)
    limiter.check_request(slow)
    clock.advance(10)
    limiter.check_request(slow)
    clock.advance(5)
    with pytest.raises(RateLimitError) as caught:
        limiter.check_request(slow)
    assert caught.value.retry_after_s == pytest.approx(45.0)  # the first request leaves at t=60
    assert (caught.value.status_code, caught.value.error_type, caught.value.code) == (
        429, "requests", "rate_limit_exceeded")
    assert limiter.usage("slow") == (2, 0)  # refused requests are not counted
    clock.advance(45)
    limiter.check_request(slow)
    with pytest.raises(RateLimitError) as caught:
        limiter.check_request(slow)
    assert caught.value.retry_after_s == pytest.approx(10.0)


def test_tokens_per_minute_refuse_once_spent(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    capped = key("capped", CAPPED, tokens_per_minute=100)
    limiter.check_request(capped)
    limiter.charge_tokens(capped, 60)
    clock.advance(20)
    limiter.check_request(capped)  # 60 of 100 spent: still admitted
    limiter.charge_tokens(capped, 70)  # overdraws to 130
    clock.advance(1)
    with pytest.raises(RateLimitError) as caught:
        limiter.check_request(capped)
    assert caught.value.error_type == "tokens"
    assert caught.value.retry_after_s == pytest.approx(39.0)  # when the first 60 tokens leave
    assert "Limit 100, Used 130" in caught.value.message
    clock.advance(39)
    limiter.check_request(capped)
    assert limiter.usage("capped") == (0, 70)


def test_unlimited_keys_are_not_tracked(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    free = key("free", GOOD)
    for _ in range(1000):
        limiter.check_request(free)
        limiter.charge_tokens(free, 1000)
    assert limiter.usage("free") == (0, 0)


def test_rate_limit_error_pickles_and_rounds_retry_after_up() -> None:
    error = RateLimitError("slow down", retry_after_s=12.01, error_type="tokens")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.retry_after_s, copy.error_type, copy.code) == (12.01, "tokens", "rate_limit_exceeded")
    assert copy.retry_after_header == "13"
    assert RateLimitError("x", retry_after_s=0.001).retry_after_header == "1"


# ---------------------------------------------------------------------------------- middleware


class Echo(BaseModel):
    model: str
    tokens: int = 0


def build_app(key_auth: KeyAuth) -> FastAPI:
    """A tiny app wired like the ingress: error handlers plus the auth middleware."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware, auth=key_auth)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/")
    async def page() -> dict[str, str]:
        return {"page": "playground"}

    @app.get("/static/{name}")
    async def static(name: str) -> dict[str, str]:
        return {"file": name}

    @app.get("/v1/models")
    async def models(request: Request) -> list[str]:
        return allowed_models(request, ["model-a", "model-b"])

    @app.post("/v1/echo")
    async def echo(body: Echo, request: Request) -> dict[str, str | None]:
        authorize_model(request, body.model)
        key_auth.charge(request, body.tokens)
        found = request_key(request)
        return {"key": found.id if found else None}

    return app


@pytest.fixture
def client(key_path: Path, clock: FakeClock) -> TestClient:
    key_auth = KeyAuth(KeyStore(key_path, clock=clock), RateLimiter(clock=clock))
    return TestClient(build_app(key_auth))


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def echo(client: TestClient, secret: str | None, model: str = "model-a", tokens: int = 0):  # noqa: ANN201
    headers = bearer(secret) if secret else {}
    return client.post("/v1/echo", json={"model": model, "tokens": tokens}, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("maas-wrong"), bearer(OLD), {"Authorization": f"Basic {GOOD}"}, {"Authorization": "Bearer "}],
    ids=["missing", "wrong", "revoked", "not-bearer", "empty"],
)
def test_bad_keys_get_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/echo", json={"model": "model-a"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["x-maas-error-code"] == "invalid_api_key"


def test_unknown_routes_need_a_key_too(client: TestClient) -> None:
    assert client.get("/nowhere").status_code == 401
    assert client.get("/nowhere", headers=bearer(GOOD)).status_code == 404


@pytest.mark.parametrize("path", ["/health", "/", "/static/app.js"])
def test_open_paths_need_no_key(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_good_key_passes_and_is_in_the_scope(client: TestClient) -> None:
    response = echo(client, GOOD, "model-b")
    assert response.status_code == 200 and response.json() == {"key": "good"}


def test_key_limited_to_a_model_gets_403_for_another(client: TestClient) -> None:
    assert echo(client, ONLY_A, "model-a").status_code == 200
    response = echo(client, ONLY_A, "model-b")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "model_not_allowed"
    assert response.json()["error"]["param"] == "model"
    assert client.get("/v1/models", headers=bearer(ONLY_A)).json() == ["model-a"]
    assert client.get("/v1/models", headers=bearer(GOOD)).json() == ["model-a", "model-b"]


def test_rpm_exceeded_gets_429_with_retry_after(client: TestClient, clock: FakeClock) -> None:
    assert echo(client, SLOW).status_code == 200
    clock.advance(0.5)
    assert echo(client, SLOW).status_code == 200
    clock.advance(0.2)
    response = echo(client, SLOW)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"  # 59.3 s, rounded up
    assert response.json()["error"]["type"] == "requests"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert echo(client, GOOD).status_code == 200  # other keys are not affected
    clock.advance(59.3)
    assert echo(client, SLOW).status_code == 200  # the window rolled over


def test_tpm_spent_gets_429_until_the_window_rolls_over(client: TestClient, clock: FakeClock) -> None:
    assert echo(client, CAPPED, tokens=100).status_code == 200
    clock.advance(30)
    response = echo(client, CAPPED)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "tokens"
    assert response.headers["Retry-After"] == "30"
    clock.advance(30)
    assert echo(client, CAPPED).status_code == 200


def test_without_a_key_store_everything_passes() -> None:
    client = TestClient(build_app(KeyAuth()))
    assert echo(client, None, "model-b", tokens=10**9).json() == {"key": None}
    assert client.get("/v1/models").json() == ["model-a", "model-b"]
