"""Prepare what the GPU tier needs on a bare GPU machine (one with Python 3.11 and a CUDA torch).

    PYTHONPATH=. python tests/gpu/prepare.py DIR [--no-wheels]   (or: tests/gpu/run_gpu_tier.sh prepare DIR)

writes ``DIR/models/classifier`` (the parity classifier of ``tests/parity.py``) and
``DIR/models/minilm`` (all-MiniLM-L6-v2), both saved in float16 (half the bytes to carry; the
engine loads them in the dtype it picks), ``DIR/requirements.txt`` (the packages the tier
imports besides torch, pinned to this environment's versions) and ``DIR/wheels`` (those wheels,
fetched with pip). Copy DIR and the repository to the GPU machine and run
``tests/gpu/run_gpu_tier.sh run DIR`` there.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOTS = ("transformers", "pydantic", "pyyaml", "pytest", "pytest-timeout")
"""What the tier imports besides torch (which the GPU machine brings, built for its CUDA)."""
PROVIDED = re.compile(r"^(torch|nvidia-.*|triton|sympy|mpmath|networkx|jinja2|markupsafe|setuptools)$")


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _needed(requirement: str) -> bool:
    """Whether a dependency applies on this platform without extras."""
    from packaging.requirements import Requirement

    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate({"extra": ""})


def pinned_requirements(roots: tuple[str, ...] = ROOTS) -> list[str]:
    """``name==version`` of ``roots`` and everything they need (no extras), as installed here."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = _name(todo.pop())
        if name in seen or PROVIDED.match(name):
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional or platform-specific dependency not installed here
        seen[name] = dist.version
        todo += [r for r in dist.requires or [] if _needed(r)]
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def save_half(out: Path) -> None:
    """The parity classifier and MiniLM, in float16."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from maas.engines.classifier_heads import load_classifier
    from maas.storage.embedded import minilm_path
    from tests.parity import prototype_classifier

    torch.manual_seed(0)
    classifier = prototype_classifier(out / "classifier")
    load_classifier(classifier).half().save_pretrained(classifier)
    AutoModel.from_pretrained(str(minilm_path())).half().save_pretrained(out / "minilm")
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(out / "minilm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--no-wheels", action="store_true", help="write requirements.txt only")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    save_half(args.dir / "models")
    requirements = args.dir / "requirements.txt"
    requirements.write_text("\n".join(pinned_requirements()) + "\n")
    if not args.no_wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "-d", str(args.dir / "wheels"), "-r", str(requirements)], check=True)
    print(args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
