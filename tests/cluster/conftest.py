"""Fixtures of the cluster tests, and their marker.

Tests marked ``cluster`` start their own multi-process Ray cluster with ``ray start`` (minutes on
2 cores); deselect them with ``-m "not cluster"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_apps import TINY_CLASSIFIER, build_tiny_classifier


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts its own multi-process Ray cluster with `ray start` (slow)"
    )


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained 3-label classifier folder (see :func:`cluster_apps.build_tiny_classifier`)."""
    return build_tiny_classifier(tmp_path_factory.mktemp("models") / TINY_CLASSIFIER)
