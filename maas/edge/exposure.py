"""Who can reach the service: ``maas serve`` and ``maas deploy`` refuse to listen beyond loopback
without API keys (``ingress.api_keys_file``), unless told to with ``--allow-public-without-keys``."""

from __future__ import annotations

import sys
from pathlib import Path

from maas.config import AppConfig, load_serve_file

MAAS_IMPORT_PATH = "pipelines.app:build_app"
"""The import path of the maas application in a Serve config."""
SERVE_DEFAULT_HOST = "127.0.0.1"
"""The HTTP host of Ray Serve's proxies when a Serve config sets none."""


def check_exposure(host: str, config: AppConfig, forced: bool) -> None:
    """Refuse to listen beyond loopback without API keys, unless explicitly forced."""
    loopback = is_loopback_host(host)
    if config.ingress.api_keys_file:
        return
    if loopback:
        print(f"[maas] no API keys configured (ingress.api_keys_file): listening on {host} only.",
              file=sys.stderr)
        return
    if not forced:
        raise SystemExit(f"[maas] refusing to listen on {host} without API keys: set "
                         "ingress.api_keys_file (see `maas keys add`), or pass "
                         "--allow-public-without-keys.")


def is_loopback_host(host: str) -> bool:
    """Whether an HTTP host is this machine's loopback only: ``localhost`` and loopback addresses
    are; any other name or address (``0.0.0.0``, ``::``, a host name) is not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_deploy_exposure(config_path: str | Path, forced: bool) -> None:
    """:func:`check_exposure` of each maas application of a Serve config, at the config's HTTP
    host (Serve's own default, 127.0.0.1, when it sets none): ``maas deploy`` refuses what
    ``maas serve`` refuses."""
    serve_file = load_serve_file(config_path)
    host = str(serve_file.http_options.get("host") or SERVE_DEFAULT_HOST)
    for app in serve_file.applications:
        if app.get("import_path") == MAAS_IMPORT_PATH:
            check_exposure(host, AppConfig.model_validate(app.get("args") or {}), forced)
