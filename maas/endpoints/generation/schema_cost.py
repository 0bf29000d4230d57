"""What a JSON schema costs to compile for structured output, read from its text before compiling.

Structured decoding (xgrammar) turns a ``pattern`` into a grammar by writing out its counted
repetitions: ``[a-z]{1,4000}`` becomes thousands of rules, and the time grows much faster than
the count (a compile of that one 90-character schema took seconds on a 2-core CPU; nested counts
multiply: ``([a-z]{1,200}){1,200}`` is 40,000). The size of the schema's text (``max_schema_chars``)
does not bound this, so the request budget bounds the largest *repeat* of any pattern: the
product of the counts of the nested ``{m}``, ``{m,}`` and ``{m,n}`` quantifiers around an atom
(``n``, or ``m`` when there is no upper bound). ``*``, ``+`` and ``?`` are loops, not written out,
and ``maxLength``/``maxItems`` are cheap: a schema can say a length that way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def pattern_repeat(pattern: str) -> int:
    """The largest product of nested counted repetitions in a regular expression (1: none)."""
    groups = [1]  # the largest repeat inside each open group, the whole pattern first
    last = 1  # the repeat of the atom just read (a group's, once it closes)
    i = 0
    while i < len(pattern):
        char = pattern[i]
        counted = _QUANTIFIER.match(pattern, i)
        if counted:
            last *= max(1, int(counted.group(2) or counted.group(1)))
            i = counted.end()
        elif char == "(":
            groups.append(1)
            last, i = 1, i + 1
        elif char == ")" and len(groups) > 1:
            last, i = groups.pop(), i + 1
        else:
            last, i = 1, _atom_end(pattern, i)
        groups[-1] = max(groups[-1], last)
    return max(groups)


def _atom_end(pattern: str, i: int) -> int:
    """Where the atom at ``i`` ends: an escape is two characters, a class runs to its ``]``."""
    if pattern[i] == "\\":
        return i + 2
    if pattern[i] != "[":
        return i + 1
    i += 2 if pattern[i + 1:i + 2] == "]" else 1  # a leading ] is a literal
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def patterns_of(schema: Any) -> Iterator[str]:
    """Every regular expression of a JSON schema: ``pattern`` values and ``patternProperties``
    keys, at any depth (walked without recursion: a schema may nest deeply)."""
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    yield value
                elif key == "patternProperties" and isinstance(value, dict):
                    yield from (k for k in value if isinstance(k, str))
                todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)


def repeats(schemas: list[Any]) -> list[int]:
    """The :func:`pattern_repeat` of every pattern of ``schemas``."""
    return [pattern_repeat(pattern) for schema in schemas for pattern in patterns_of(schema)]
