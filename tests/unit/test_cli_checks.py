"""What slips get from ``maas``: one line at once, not a traceback after a minute or minutes of
retries (``maas status`` with no service, ``maas serve`` on a port in use)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from maas.cli import running_ray
from maas.cli.local_ray import check_http_port


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_address_of_a_stopped_ray_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    # An earlier test of the same process may have left Ray initialized; this one is about a
    # process with no Ray yet.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    address = f"127.0.0.1:{_closed_port()}"
    assert running_ray.unreachable(address, timeout_s=1)
    with pytest.raises(SystemExit, match=rf"no Ray at {address} \(.+\): is `maas serve` running\?"):
        running_ray.join_running_ray(address)


def test_an_address_where_something_listens_is_left_to_ray() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert running_ray.unreachable(f"127.0.0.1:{sock.getsockname()[1]}", timeout_s=1) is None
    assert running_ray.unreachable("auto") is None
    assert running_ray.unreachable("ray://head:10001") is None


def test_no_ray_at_auto_is_one_line_and_the_join_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    calls: list[dict[str, Any]] = []

    def no_ray(**kwargs: Any) -> None:  # the fault: what ray.init raises with no Ray on the machine
        calls.append(kwargs)
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_ray)
    with pytest.raises(SystemExit, match=r"no running Ray found \(address auto\): is `maas serve` running\?"):
        running_ray.join_running_ray("auto")
    assert calls[0]["log_to_driver"] is False


def test_serve_refuses_a_port_in_use_before_it_starts_anything() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(SystemExit, match=rf"127.0.0.1:{port} is in use \(.+\): stop what holds it"):
            check_http_port("127.0.0.1", port)
    check_http_port("127.0.0.1", port)  # free again
