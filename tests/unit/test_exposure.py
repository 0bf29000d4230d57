"""``maas serve`` and ``maas deploy`` refuse to listen beyond loopback without API keys, unless
told to with ``--allow-public-without-keys``; ``maas deploy`` refuses before it contacts the cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from maas import deploy as deploy_module
from maas.cli import build_parser
from maas.edge.exposure import check_deploy_exposure, is_loopback_host


def serve_file(tmp_path: Path, host: str | None, keys: str | None = None) -> Path:
    args: dict[str, Any] = {"ingress": {"api_keys_file": keys}} if keys else {}
    config: dict[str, Any] = {"applications": [
        {"name": "maas", "route_prefix": "/", "import_path": "pipelines.app:build_app", "args": args}]}
    if host is not None:
        config["http_options"] = {"host": host, "port": 8000}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("maas.example.com", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "maas.example.com"])
def test_a_public_host_without_keys_is_refused_unless_forced(tmp_path: Path, host: str) -> None:
    path = serve_file(tmp_path, host)
    with pytest.raises(SystemExit, match="refusing to listen on .* without API keys"):
        check_deploy_exposure(path, forced=False)
    check_deploy_exposure(path, forced=True)
    check_deploy_exposure(serve_file(tmp_path, host, keys="/keys/api-keys.yaml"), forced=False)


@pytest.mark.parametrize("host", [None, "127.0.0.1"])
def test_loopback_needs_no_keys(tmp_path: Path, host: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    check_deploy_exposure(serve_file(tmp_path, host), forced=False)  # Serve's default host: loopback
    assert "listening on 127.0.0.1 only" in capsys.readouterr().err


def test_maas_deploy_refuses_before_contacting_the_cluster(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    deployed: list[Any] = []
    monkeypatch.setattr(deploy_module, "deploy", lambda *args: deployed.append(args))
    path = str(serve_file(tmp_path, "0.0.0.0"))
    args = build_parser().parse_args(["deploy", path, "--address", "http://127.0.0.1:8265"])
    with pytest.raises(SystemExit):
        args.func(args)
    assert deployed == []
    args = build_parser().parse_args(["deploy", path, "--allow-public-without-keys"])
    assert args.func(args) == 0 and deployed == [(path, None)]
