"""The settings, flags and variables of the code are documented: every config model's field in
``docs/configuration.md`` (Serve config, training configs, key file), every ``maas`` command and
flag, every Makefile variable, every ``MAAS_*`` environment variable. A new one without docs fails
``make check``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from docs_text import DOC_FILES, FENCE, ROOT, read
from pydantic import BaseModel

from maas.cli import build_parser
from maas.config import AppConfig

CONFIG_DOC = ROOT / "docs" / "configuration.md"


def config_fields(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Every field name of ``model`` and of the config models inside it."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for inner in (field.annotation, *_nested(field.annotation)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                names |= config_fields(inner, seen)
    return names


def _nested(annotation: Any) -> list[Any]:
    out = []
    for arg in get_args(annotation):
        out += [arg, *_nested(arg)]
    return out


def code_words(text: str) -> set[str]:
    """Identifiers inside the text's inline code spans (an example in a code block documents nothing)."""
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return {word for span in spans for word in re.findall(r"[A-Za-z_][\w-]*", span)}


def config_models() -> list[type[BaseModel]]:
    """Every config file maas reads: a Serve config's ``args``, a training config (classifier and
    LoRA), the API key file."""
    from maas.edge.key_file import KeyFile
    from pipelines.training.lora import LoraTrainConfig
    from pipelines.training.train import TrainConfig

    return [AppConfig, TrainConfig, LoraTrainConfig, KeyFile]


@pytest.mark.parametrize("model", config_models(), ids=lambda m: m.__name__)
def test_every_setting_is_documented_in_configuration_md(model: type[BaseModel]) -> None:
    missing = sorted(config_fields(model) - code_words(read(CONFIG_DOC)))
    assert not missing, f"docs/configuration.md does not document these {model.__name__} settings: {missing}"


def subcommands(parser: argparse.ArgumentParser, prefix: str = "maas") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command with its parser, and each action of a command that takes one as its first
    argument (`maas keys add`, `maas models list`, with the command's parser)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{prefix} {name}", sub), *subcommands(sub, f"{prefix} {name}")]
        elif not action.option_strings and action.choices and prefix != "maas":
            found += [(f"{prefix} {choice}", parser) for choice in action.choices]
    return found


def test_command_actions_are_walked() -> None:
    names = [name for name, _ in subcommands(build_parser())]
    assert {"maas serve", "maas keys add", "maas keys revoke", "maas keys list", "maas models list"} <= set(names)


def test_every_maas_command_and_flag_is_documented_in_configuration_md() -> None:
    text = read(CONFIG_DOC)
    for name, sub in subcommands(build_parser()):
        assert name in text, f"docs/configuration.md lists no `{name}`"
        flags = {o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        missing = sorted(f for f in flags if not re.search(rf"{re.escape(f)}(?![\w-])", text))
        assert not missing, f"`{name}`: docs/configuration.md does not mention {missing}"


def make_variables(makefile: Path = ROOT / "Makefile") -> set[str]:
    """The Makefile's variables a user sets on the command line: those with a default (``?=``) and
    those read but never assigned (``$(PYTEST_ARGS)``)."""
    text = read(makefile)
    assigned = set(re.findall(r"^([A-Z_]+)\s*[:?+]?=", text, re.M))
    defaults = set(re.findall(r"^([A-Z_]+)\s*\?=", text, re.M))
    read_only = set(re.findall(r"\$\(([A-Z_]+)\)", text)) - assigned - {"MAKE", "CURDIR", "SHELL"}
    return defaults | read_only


def test_every_make_variable_is_documented() -> None:
    """`make run CONFIG=...`, `make install GPU=1`, `make soak SOAK_S=...`: each variable a user may
    set is written as ``NAME=`` in the README or docs/."""
    variables = make_variables()
    assert {"GPU", "CONFIG", "PYTEST_ARGS", "SOAK_S"} <= variables
    text = "\n".join(read(path) for path in DOC_FILES)
    missing = sorted(v for v in variables if not re.search(rf"\b{v}=", text))
    assert not missing, f"Makefile variables no doc mentions (as NAME=...): {missing}"


def environment_variables() -> set[str]:
    """The ``MAAS_*`` environment variables the code reads (maas, pipelines, deployments)."""
    found: set[str] = set()
    for package in ("maas", "pipelines", "deployments"):
        for file in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"(?:environ(?:\.get)?|getenv)\(?\[?\s*\"(MAAS_[A-Z_]+)\"", read(file)))
    return found


def test_every_environment_variable_is_documented_in_configuration_md() -> None:
    variables = environment_variables()
    assert "MAAS_HOME" in variables
    text = read(CONFIG_DOC)
    missing = sorted(v for v in variables if f"`{v}`" not in text)
    assert not missing, f"docs/configuration.md does not document: {missing}"
