"""Join a Ray that is already running, for a command that only reads it (``maas status``).

Ray alone answers a newcomer's two usual slips badly: with no Ray on the machine, ``auto`` raises a
``ConnectionError`` traceback; with the address of a Ray that has stopped (the one an earlier
``maas serve`` printed), ``ray.init`` retries for minutes. Here both end at once with a line that
says what to do. The join is quiet: the output of the cluster's workers (training, Serve) stays in
Ray's log files instead of being mixed into the status table.
"""

from __future__ import annotations

import logging
import socket

PROBE_TIMEOUT_S = 3.0
NOT_RUNNING_HINT = "is `maas serve` running? It prints its Ray address (\"Ray cluster at ...\") when it starts."


def unreachable(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why nothing answers at a ``host:port`` Ray address, or None when something listens there
    (``auto``, ``ray://`` and other forms are left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address or not host:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def join_running_ray(address: str) -> None:
    """``ray.init`` on a running Ray, quietly; a clear :class:`SystemExit` when there is none."""
    import ray

    if ray.is_initialized():
        return
    reason = unreachable(address)
    if reason:
        raise SystemExit(f"[maas] no Ray at {address} ({reason}): {NOT_RUNNING_HINT}")
    try:
        ray.init(address=address, namespace="serve", log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise SystemExit(f"[maas] no running Ray found (address {address}): {NOT_RUNNING_HINT}") from exc
