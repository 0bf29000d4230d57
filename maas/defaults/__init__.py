"""The default configs, shipped inside the package so that an installed maas (``pip install .``,
no checkout) serves and trains with them. In a checkout these are links to ``cluster/``, the one
copy people edit."""

from __future__ import annotations

from pathlib import Path


def default_file(name: str) -> Path:
    """A default config by file name, e.g. ``maas-cpu.yaml`` or ``train-topic.yaml``."""
    return Path(__file__).parent / name
