"""GPU tier: the classifier and encoder engines on CUDA, no Ray and no vLLM.

Every test here is marked ``gpu`` and skipped where torch sees no CUDA device, so ``pytest
tests`` on a CPU machine passes over them at collection. ``tests/gpu/run_gpu_tier.sh`` prepares
what a bare GPU machine needs (models in half precision, wheels) and runs this tier there; it
loads this conftest only (``--confcutdir``), not the Ray fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TIER_DIR_ENV = "MAAS_GPU_TIER_DIR"
"""Folder written by ``tests/gpu/prepare.py``; unset: the models are built from the installed MiniLM."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip = None if torch.cuda.is_available() else pytest.mark.skip(
        reason="no CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if skip is not None:
                item.add_marker(skip)


def _prepared(name: str) -> Path | None:
    tier = os.environ.get(TIER_DIR_ENV)
    return Path(tier) / "models" / name if tier else None


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity classifier (``tests/parity.py``): prepared in float16, or built here."""
    from tests.parity import prototype_classifier

    return _prepared("classifier") or prototype_classifier(tmp_path_factory.mktemp("gpu") / "classifier")


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    """MiniLM: prepared in float16, or the installed package's folder."""
    from maas.storage.embedded import minilm_path

    return _prepared("minilm") or minilm_path()
