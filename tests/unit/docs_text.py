"""What the docs tests read from the README and ``docs/``: code blocks, commands, routes, Make targets."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
METHOD_ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[^\s`'\")\],;]*)")
CURL_ROUTE = re.compile(r"\$B(/[^\s'\"`]*)")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its file, first line number, language and text."""

    path: Path
    line: int
    lang: str
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def blocks(path: Path) -> list[Block]:
    text = read(path)
    return [Block(path, text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def fence_lines(path: Path) -> list[int]:
    """Line numbers of every line that opens or closes a fenced block, indented ones included
    (the block reader sees only fences at the start of a line: an indented one would hide its block)."""
    return [i for i, line in enumerate(read(path).splitlines(), 1) if line.lstrip().startswith(("```", "~~~"))]


def prose(path: Path) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", read(path))


def shell_lines(block: Block) -> list[str]:
    """A bash block's commands: comments dropped, continued lines joined."""
    joined = block.text.replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def commands(tool: str) -> list[tuple[str, list[str], bool]]:
    """Every ``tool ...`` command of the docs: (where, argv after tool, whether it is inline code).

    Inline code may only mention a command (`maas rollout`); blocks hold whole commands."""
    found: list[tuple[str, list[str], bool]] = []
    for path in DOC_FILES:
        for block in blocks(path):
            if block.lang in ("bash", "sh", ""):
                found += [(block.where(), argv, False) for line in shell_lines(block)
                          for argv in _invocations(line, tool)]
        for span in INLINE.findall(prose(path)):
            found += [(str(path.relative_to(ROOT)), argv, True) for argv in _invocations(span, tool)]
    return found


WRAPPERS = {"sudo": 1, "time": 1, "nohup": 1, "env": 1, "exec": 1, "timeout": 2, "flock": 2}
"""Commands that run the command after them (with this many words of their own)."""


def _invocations(line: str, tool: str) -> list[list[str]]:
    """``tool`` invocations of a shell line: also after ``&&``, ``;``, ``|``, ``.venv/bin/``,
    ``VAR=value``, a wrapper (``timeout 600``, ``sudo``) or the ``--`` of a launcher
    (``ray job submit ... -- maas train ...``)."""
    out: list[list[str]] = []
    for part in re.split(r"&&|;|\|\||\|", line):
        try:
            words = shlex.split(part.strip())
        except ValueError:
            continue
        words = _command_words(words, tool)
        if words and words[0] in (tool, f".venv/bin/{tool}"):
            out.append(words[1:])
    return out


def _command_words(words: list[str], tool: str) -> list[str]:
    """``words`` from the command they run: environment assignments, wrappers and a launcher's
    arguments up to its ``--`` dropped."""
    while words:
        if "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value before the command
        elif words[0] in WRAPPERS:
            words = words[WRAPPERS[words[0]]:]
        elif words[0] not in (tool, f".venv/bin/{tool}") and "--" in words:
            words = words[words.index("--") + 1:]
        else:
            return words
    return words


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    """The Makefile's targets, read from the file itself (rules, not variable assignments)."""
    targets: set[str] = set()
    for line in read(makefile).splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-$() ]+):(?![=])", line)
        if match and not line.startswith("\t"):
            targets |= {t for t in match.group(1).split() if not t.startswith((".", "$"))}
    return targets


def documented_routes(text: str) -> set[tuple[str, str]]:
    """``METHOD /path`` pairs written in the text."""
    return {(m, p.rstrip(".:")) for m, p in METHOD_ROUTE.findall(text)}


def curl_paths(text: str) -> set[str]:
    """Paths called as ``$B/...`` in the docs' curl examples."""
    return {p.split("?", 1)[0] for p in CURL_ROUTE.findall(text)}


def route_pattern(path: str) -> re.Pattern[str]:
    """A FastAPI path (``/v1/files/{file_id}``, ``{model_id:path}``) as a regex over concrete paths."""
    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(("[^/]+" if not p.endswith(":path}") else ".+") if p.startswith("{") else re.escape(p)
                    for p in parts)
    return re.compile(f"^{regex}$")


def normalize(path: str) -> str:
    """``{model_id:path}`` written as ``{model_id}``."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", read(path)), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file or heading anchor does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", read(path)):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    return broken


PREFIX = re.compile(r"^\[maas\]\s+(?:(?:\d+m)?\d+s\s\s)?")


def printed_messages() -> list[tuple[str, str]]:
    """What the docs show ``maas`` printing: (where, message) for every code-block line and inline
    code span that starts with ``[maas]``, without the prefix and the elapsed time."""
    found: list[tuple[str, str]] = []
    for path in DOC_FILES:
        for block in blocks(path):
            found += [(f"{block.path.relative_to(ROOT)}:{block.line + i}", PREFIX.sub("", line.strip()))
                      for i, line in enumerate(block.text.splitlines()) if line.startswith("[maas] ")]
        found += [(str(path.relative_to(ROOT)), PREFIX.sub("", span)) for span in INLINE.findall(prose(path))
                  if span.startswith("[maas] ") and not span.startswith("[maas] <")]
    return found


def message_patterns(packages: tuple[str, ...] = ("maas", "pipelines", "deployments"),
                     min_literal: int = 8) -> list[re.Pattern[str]]:
    """Every string and f-string of the code as a regex over what it prints (each ``{...}`` any
    text); strings with fewer than ``min_literal`` fixed characters match too much and are left out."""
    import ast

    patterns = []
    for package in packages:
        for file in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(read(file))):
                parts = _string_parts(node)
                literal = "".join(p for p in parts if p is not None) if parts else ""
                if parts and len(literal.strip()) >= min_literal:
                    regex = "".join(".+?" if p is None else re.escape(p) for p in parts)
                    patterns.append(re.compile(PREFIX.sub("", regex.replace(r"\[maas\]\ ", "[maas] ", 1))))
    return patterns + makefile_patterns()


def makefile_patterns() -> list[re.Pattern[str]]:
    """What the Makefile's recipes print with ``[maas]`` (each ``$(VAR)`` any text)."""
    texts = re.findall(r"\[maas\] ([^\"'\n]+)", read(ROOT / "Makefile"))
    return [re.compile(".+?".join(re.escape(part) for part in re.split(r"\$\(\w+\)", text.strip())))
            for text in texts]


def _string_parts(node: object) -> list[str | None] | None:
    """A string constant or f-string as its fixed parts, None for each placeholder."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value.strip()]
    if isinstance(node, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.Constant) else None for v in node.values]
        return [p for p in parts if p != ""]
    return None
