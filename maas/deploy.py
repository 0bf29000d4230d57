"""Deploy a Serve config to a running Ray cluster, and read its replicas back.

Both go through the Ray dashboard's Serve REST API (``PUT`` / ``GET /api/serve/applications/``),
the path Ray's own ``serve deploy`` and ``serve status`` take. Ray's submission client adds the
cluster's token (``Authorization: Bearer ...``) when ``RAY_AUTH_MODE=token``; the token comes from
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.

``address`` is always the dashboard's HTTP address (e.g. ``http://127.0.0.1:8265``), not the GCS
address: deploying needs no Ray driver, so it works from a laptop through ``ray dashboard`` or a
``kubectl port-forward``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.config import AppConfig
from maas.edge.exposure import MAAS_IMPORT_PATH

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"


@dataclass(frozen=True)
class ReplicaInfo:
    """One replica of a deployment: its id, Serve state (RUNNING, STARTING, ...) and node."""

    replica_id: str
    state: str
    node_id: str | None = None
    node_ip: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class DeploymentReplicas:
    """The replicas of one deployment of one application, with the deployment's status."""

    application: str
    name: str
    status: str
    target_replicas: int
    replicas: list[ReplicaInfo] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Replicas per state, e.g. ``{"RUNNING": 2, "STARTING": 1}``."""
        return dict(Counter(r.state for r in self.replicas))

    def running(self) -> int:
        """Replicas in state RUNNING."""
        return self.counts().get("RUNNING", 0)


def dashboard_address(address: str | None = None) -> str:
    """The dashboard address to use: ``address``, else ``$RAY_DASHBOARD_ADDRESS``, else the default."""
    chosen = address or os.environ.get("RAY_DASHBOARD_ADDRESS") or DEFAULT_DASHBOARD
    if "://" not in chosen:
        raise ValueError(f"{chosen!r} is not the dashboard's HTTP address (e.g. {DEFAULT_DASHBOARD}).")
    return chosen.rstrip("/")


def serve_config(config_path: str | Path) -> dict[str, Any]:
    """The Serve config file as the dashboard receives it, after both validations.

    Every application built by ``pipelines.app:build_app`` has its ``args`` checked as an
    :class:`~maas.config.AppConfig` (unknown keys are errors), then the whole file is checked
    against Ray's ``ServeDeploySchema``, exactly as ``serve deploy`` does.
    """
    import yaml
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(Path(config_path).read_text())
    for app in raw.get("applications") or []:
        if app.get("import_path") == MAAS_IMPORT_PATH:
            AppConfig.model_validate(app.get("args") or {})
    return ServeDeploySchema.model_validate(raw).model_dump(exclude_unset=True)


def _client(address: str | None) -> Any:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard_address(address))


def deploy(config_path: str | Path, address: str | None = None) -> dict[str, Any]:
    """Validate a Serve config file and submit it to the cluster; returns what was submitted.

    Like ``serve deploy``, this returns once the cluster accepted the config: deployments then
    start (or update in place) in the background. Call :func:`wait_until_running` to wait.
    Submitting a changed file updates the running application; unchanged deployments keep
    their replicas.
    """
    config = serve_config(config_path)
    _client(address).deploy_applications(config)
    return config


def serve_details(address: str | None = None) -> dict[str, Any]:
    """The raw ``ServeInstanceDetails`` JSON of the cluster (applications, deployments, replicas)."""
    return _client(address).get_serve_details()


def replica_status(address: str | None = None) -> list[DeploymentReplicas]:
    """Every deployment of every application, with its replicas and their states."""
    return parse_replicas(serve_details(address))


def parse_replicas(details: dict[str, Any]) -> list[DeploymentReplicas]:
    """The deployments and replicas in a ``ServeInstanceDetails`` JSON document."""
    result: list[DeploymentReplicas] = []
    for app_name, app in sorted((details.get("applications") or {}).items()):
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            replicas = [
                ReplicaInfo(r["replica_id"], str(r["state"]), r.get("node_id"), r.get("node_ip"),
                            r.get("pid"))
                for r in dep.get("replicas") or []
            ]
            result.append(DeploymentReplicas(app_name, dep_name, str(dep.get("status")),
                                             int(dep.get("target_num_replicas") or 0), replicas))
    return result


def application_status(details: dict[str, Any], app_name: str) -> str | None:
    """The status of one application (RUNNING, DEPLOYING, DEPLOY_FAILED, ...), or None if absent."""
    app = (details.get("applications") or {}).get(app_name)
    return None if app is None else str(app.get("status"))


def wait_until_running(
    address: str | None = None, app_name: str = "maas", timeout_s: float = 600, poll_s: float = 2
) -> list[DeploymentReplicas]:
    """Wait until the application is RUNNING; raises on DEPLOY_FAILED or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    status: str | None = None
    while time.monotonic() < deadline:
        details = serve_details(address)
        status = application_status(details, app_name)
        if status == "RUNNING":
            return parse_replicas(details)
        if status == "DEPLOY_FAILED":
            message = details["applications"][app_name].get("message", "")
            raise RuntimeError(f"application {app_name!r} failed to deploy: {message}")
        time.sleep(poll_s)
    raise TimeoutError(f"application {app_name!r} not RUNNING after {timeout_s}s (last: {status})")


def format_status(deployments: list[DeploymentReplicas]) -> str:
    """A table of deployments for a terminal: status, target and replicas per state."""
    lines = []
    for dep in deployments:
        counts = replicas_text(dep.counts(), dep.status)
        lines.append(f"{dep.application}/{dep.name:38s} {dep.status:10s} "
                     f"target={dep.target_replicas:<3d} replicas: {counts}")
    return "\n".join(lines)


def replicas_text(counts: dict[str, int], status: str) -> str:
    """A deployment's replicas per state for a terminal; none at all is ``cold`` when Serve holds
    the deployment healthy (scaled to zero) or starting its first replica (a cold start)."""
    if counts:
        return ", ".join(f"{state}={n}" for state, n in sorted(counts.items()))
    return "none (cold: scaled to zero)" if status in ("HEALTHY", "UPSCALING") else "none"
