"""Fails when a lock no longer covers pyproject.toml: a requirement of the project (or of the extras
the lock was compiled for) that the lock lacks, or pins at a version the requirement excludes.

`make install` runs it before it installs, so a dependency added to pyproject.toml without `make lock`
stops the install with the command to run, instead of leaving an environment that lacks it.

    python cluster/lock/check.py LOCK EXTRA... [--pin NAME==VERSION]...
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# packaging as pip vendors it: the check runs before anything is installed into the venv.
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


def locked(text: str) -> dict[str, str]:
    """The ``name==version`` pins of a lock, by canonical name."""
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def problems(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """What of ``requirements`` (those whose marker holds here) the pins lack or exclude."""
    found = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            found.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"{req.name}=={version} does not satisfy {req}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("extras", nargs="+")
    parser.add_argument("--pin", action="append", default=[], help="a pin installed apart from the lock")
    args = parser.parse_args(argv)
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for e in args.extras for r in project["optional-dependencies"][e]]
    pins = locked(args.lock.read_text() + "\n" + "\n".join(args.pin))
    found = problems(requirements, pins)
    for problem in found:
        print(f"[maas] {args.lock} is stale: {problem}; run `make lock` and commit it", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
