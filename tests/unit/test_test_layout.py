"""The suite's own layout: pytest imports test modules by basename (rootdir imports, no
``__init__``), so two test files of one name in different folders stop the whole run at
collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_basename_of_its_own() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1], sorted(
        str(path.relative_to(TESTS)) for path in TESTS.rglob("test_*.py") if names[path.name] > 1)
