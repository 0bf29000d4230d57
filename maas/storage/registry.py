"""The model registry: trained classifiers stored as versions, and which version is live.

Layout under the registry root (``cache_dir()/registry`` unless configured)::

    <root>/<name>/v1/          a Hugging Face folder + maas_training.json + report.{json,md,png}
    <root>/<name>/v2/
    <root>/<name>/live.json    {"version": "v2", "updated_at": ...}
    <root>/<name>/training.json  the state of a training run of <name> (:class:`TrainingStatus`)
    <root>/<name>/canary.json  a running canary and its decisions (:mod:`maas.storage.canary_store`)

A version folder appears atomically with its marker (:func:`maas.storage.staged_folder`), so a
half-written version is never listed. ``live.json`` is replaced atomically (``os.replace``);
the serving side re-reads it when the file changes, which is how a rollout reaches the live
service without a redeploy (see :class:`ServedClassifiers`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from maas.storage.files import cache_dir, locked, read_json, read_marker, staged_folder, write_atomic

REGISTRY_PREFIX = "registry:"
LIVE_FILE = "live.json"
CANARY_FILE = "canary.json"
STATUS_FILE = "training.json"
TRAINING_FILE = "maas_training.json"
VERSION_PATTERN = re.compile(r"^v([1-9][0-9]*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown model or version, label mismatch)."""


class ModelVersion(BaseModel):
    """One stored version of a model, with what it was trained on and how well it did."""

    name: str
    version: str
    path: str
    created_at: str = ""
    task: str | None = None
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    data_hash: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    live: bool = False

    @property
    def ref(self) -> str:
        """``name/vN``."""
        return f"{self.name}/{self.version}"


TrainingState = Literal["training", "done", "failed"]


class TrainingStatus(BaseModel):
    """Where a training run of a registry model stands; written by the run itself (the driver
    at phase changes, rank 0 of the Ray Train workers at every progress step)."""

    state: TrainingState = Field(description="`training`, `done` or `failed`.")
    phase: str = Field("", description="What runs now, e.g. `linear probe`, `fine-tune`, `evaluating`.")
    step: int | None = Field(None, description="Training steps done in this phase.")
    total: int | None = Field(None, description="Training steps of this phase.")
    eta_s: float | None = Field(None, description="Estimated seconds left in this phase.")
    detail: str = Field("", description="A line for people: the last result, or the error.")
    updated_at: str = Field("", description="When this status was written (UTC, ISO 8601).")

    def line(self) -> str:
        """One line for a terminal: ``fine-tune step 12/262, ETA 3m10s``."""
        parts = [self.state if self.state != "training" else self.phase or "training"]
        if self.step is not None and self.total:
            parts.append(f"step {self.step}/{self.total}")
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        text = ", ".join(parts)
        return f"{text}: {self.detail}" if self.detail else text


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def write_status(path: str | Path, status: TrainingStatus) -> None:
    """Replace a status file atomically (readers never see half a file)."""
    stamped = status.model_copy(update={"updated_at": datetime.now(UTC).isoformat(timespec="seconds")})
    write_atomic(Path(path), stamped.model_dump_json(indent=2) + "\n")


def default_registry_dir() -> Path:
    return cache_dir() / "registry"


def check_name(name: str) -> str:
    """A registry model name: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(name):
        raise RegistryError(f"Invalid model name {name!r}: use letters, digits, '.', '_' and '-'.")
    return name


def version_number(version: str) -> int:
    match = VERSION_PATTERN.match(version)
    if not match:
        raise RegistryError(f"Invalid version {version!r}: expected v1, v2, ...")
    return int(match.group(1))


class ModelRegistry:
    """Versions of named models in a folder; one version per name is live."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_registry_dir()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[ModelVersion]:
        """The complete versions of ``name``, oldest first."""
        folder = self.root / check_name(name)
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if VERSION_PATTERN.match(p.name) and read_marker(p)]
        live = self.live_version(name)
        return [self._describe(name, v, live) for v in sorted(found, key=version_number)]

    def get(self, name: str, version: str) -> ModelVersion:
        """One version; :class:`RegistryError` if it does not exist (or is incomplete)."""
        version_number(version)
        path = self.root / check_name(name) / version
        if not read_marker(path):
            known = ", ".join(v.version for v in self.versions(name)) or "none"
            raise RegistryError(f"No version {version} of model '{name}' (versions: {known}).")
        return self._describe(name, version, self.live_version(name))

    def resolve(self, ref: str) -> ModelVersion:
        """``name`` (its live version) or ``name/vN``."""
        name, _, version = ref.partition("/")
        if version:
            return self.get(name, version)
        live = self.live_version(name)
        if live is None:
            raise RegistryError(f"Model '{name}' has no live version in {self.root}.")
        return self.get(name, live)

    def live_version(self, name: str) -> str | None:
        try:
            data = json.loads((self.root / check_name(name) / LIVE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    def challenger(self, name: str) -> str | None:
        """The version that challenges the live one, if any: the newest complete version when it
        is newer than the live version and not the one the last rollout left (``previous`` in
        ``live.json``: a version rolled back from is no challenger), nor one a canary rolled back."""
        folder = self.root / check_name(name)
        record = read_json(folder / LIVE_FILE)
        live, previous = record.get("version"), record.get("previous")
        if not isinstance(live, str) or not VERSION_PATTERN.match(live):
            return None
        newest = self._newest_version(folder)
        if newest is None or version_number(newest) <= version_number(live) or newest == previous:
            return None
        if newest in (read_json(folder / CANARY_FILE).get("rolled_back") or []):
            return None
        return newest

    @staticmethod
    def _newest_version(folder: Path) -> str | None:
        if not folder.is_dir():
            return None
        numbered = sorted((version_number(p.name), p) for p in folder.iterdir() if VERSION_PATTERN.match(p.name))
        return next((p.name for _, p in reversed(numbered) if read_marker(p)), None)

    def set_live(self, name: str, version: str, allow_label_change: bool = False) -> ModelVersion:
        """Make ``version`` the live one; refuse a label set unlike the live version's.

        Reads the live version and writes the new one under the model's lock (the one
        :meth:`new_version` holds), so two rollouts at once never lose one's ``previous``."""
        with locked(self.root / check_name(name) / ".lock"):
            return self._set_live(name, version, allow_label_change)

    def _set_live(self, name: str, version: str, allow_label_change: bool) -> ModelVersion:
        target = self.get(name, version)
        current = self.live_version(name)
        if current and current != version and not allow_label_change:
            live_labels = self.get(name, current).labels
            if live_labels != target.labels:
                raise RegistryError(
                    f"{name}/{version} has labels {target.labels}, but the live {name}/{current} "
                    f"serves {live_labels}: clients would see different labels. Pass "
                    "--allow-label-change to roll it out anyway."
                )
        record = {"version": version, "previous": current,
                  "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
        write_atomic(self.root / name / LIVE_FILE, json.dumps(record, indent=2) + "\n")
        return target.model_copy(update={"live": True})

    def status_path(self, name: str) -> Path:
        """The file a training run of ``name`` writes its :class:`TrainingStatus` to."""
        return self.root / check_name(name) / STATUS_FILE

    def training_status(self, name: str) -> TrainingStatus | None:
        """The last written status of a training run of ``name``, if any."""
        data = read_json(self.status_path(name))
        try:
            return TrainingStatus.model_validate(data) if data else None
        except ValueError:
            return None

    def set_training_status(self, name: str, status: TrainingStatus) -> None:
        write_status(self.status_path(name), status)

    @contextlib.contextmanager
    def new_version(self, name: str, info: dict[str, Any]) -> Iterator[tuple[str, Path]]:
        """Reserve the next version of ``name``; yield ``(version, temp folder)`` to fill.

        The folder becomes ``<root>/<name>/vN`` (with its marker) when the block succeeds.
        """
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        with locked(folder / ".lock"):
            taken = [version_number(p.name) for p in folder.iterdir() if VERSION_PATTERN.match(p.name)]
            version = f"v{max(taken, default=0) + 1}"
            (folder / version).mkdir()  # reserve the number; staged_folder replaces it
        try:
            with staged_folder(folder / version, {**info, "model": name, "version": version}) as tmp:
                yield version, tmp
        except BaseException:
            with contextlib.suppress(OSError):
                (folder / version).rmdir()  # still the empty reservation: give the number back
            raise

    def _describe(self, name: str, version: str, live: str | None) -> ModelVersion:
        path = self.root / name / version
        record = read_json(path / TRAINING_FILE)
        marker = read_marker(path) or {}
        return ModelVersion(
            name=name,
            version=version,
            path=str(path),
            created_at=str(record.get("created_at") or marker.get("prepared_at") or ""),
            task=record.get("task"),
            labels=list(record.get("labels") or []),
            metrics={k: float(v) for k, v in (record.get("metrics") or {}).items()
                     if isinstance(v, int | float)},
            data_hash=record.get("data_hash"),
            config=record.get("config") or {},
            live=version == live,
        )
