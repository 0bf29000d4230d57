"""The compile work of a request's JSON schemas is bounded before they are compiled
(maas/endpoints/generation/schema_cost.py, ``ingress.limits.max_pattern_repeat`` and
``max_pattern_repeat_total``): a pattern's counted repetitions, which structured decoding writes
out, are read from its text, so a 128-tool request whose patterns would compile for many minutes
is a 400 on the event loop, and no preparation thread is taken."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from maas.config import AppConfig
from maas.endpoints.generation import budget
from maas.endpoints.generation.schema_cost import pattern_repeat, patterns_of, repeats
from maas.limits import MAX_TOOLS, RequestBudget
from maas.protocol.chat import ChatCompletionRequest
from maas.protocol.errors import RequestTooLargeError
from tests.unit.ingress_fakes import Generator, Prompts, chat, ingress

LIMITS = RequestBudget()


def with_patterns(*patterns: str) -> dict[str, Any]:
    return {"type": "object", "properties": {f"a{i}": {"type": "string", "pattern": p} for i, p in enumerate(patterns)}}


def chat_with(tools: list[dict[str, Any]], response_format: dict[str, Any] | None = None) -> ChatCompletionRequest:
    body: dict[str, Any] = {**chat("gen", stream=False),
                            "tools": [{"type": "function", "function": {"name": f"f{i}", "parameters": p}}
                                      for i, p in enumerate(tools)] or None}
    if response_format is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "s", "schema": response_format}}
    return ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize("pattern, repeat", [
    ("^[a-z]{1,4000}$", 4000),
    ("^([a-z]{1,200}){1,200}$", 40_000),  # nested counts multiply
    ("^(a{3}|b{1,7}){2}$", 14),
    ("^\\d{5}(-\\d{4})?$", 5),
    ("^.{2,}$", 2),  # no upper bound: the count written out is the lower one
    ("^(ab)*c+d?$", 1),  # loops, not written out
    ("a\\{1,900\\}", 1),  # escaped braces are characters
    ("[{]{3}[(]x{9}", 9),  # a class's brace and parenthesis are characters
    ("^[]a]{1,6}$", 6),  # a class may start with ]
    ("x{,5}y{a}", 1),  # not quantifiers: characters
    ("a)){1,9}((", 9),  # unbalanced: read without failing
    ("", 1),
])
def test_the_repeat_of_a_pattern_is_read_from_its_text(pattern: str, repeat: int) -> None:
    assert pattern_repeat(pattern) == repeat


def test_every_pattern_of_a_schema_is_found_at_any_depth() -> None:
    schema = {"type": "object", "properties": {
        "pattern": {"type": "string", "pattern": "^a{2}$"},  # a property named pattern is a schema
        "deep": {"anyOf": [{"type": "array", "items": {"type": "string", "pattern": "^b{3}$"}}]},
        "map": {"type": "object", "patternProperties": {"^k{4}$": {"type": "string"}}}}}
    deep: dict[str, Any] = {"type": "string", "pattern": "^c{5}$"}
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = {"type": "object", "properties": {"x": deep}}
    assert sorted(patterns_of(schema)) == ["^a{2}$", "^b{3}$", "^k{4}$"]
    assert sorted(repeats([schema, deep])) == [2, 3, 4, 5]


def refused(request: ChatCompletionRequest, limits: RequestBudget = LIMITS) -> RequestTooLargeError:
    with pytest.raises(RequestTooLargeError) as caught:
        budget.check_chat(request, limits)
    assert caught.value.code == "request_too_large"
    return caught.value


def test_one_pattern_repeated_past_the_bound_is_refused_naming_where_it_is() -> None:
    error = refused(chat_with([with_patterns("^[a-z]{1,4000}$")]))
    assert error.param == "tools" and "4000" in error.message and "maxLength" in error.message
    assert refused(chat_with([], with_patterns("^(x{1,20}){1,20}$"))).param == "response_format"
    budget.check_chat(chat_with([with_patterns("^[a-z]{1,256}$")], with_patterns("^\\d{256}$")), LIMITS)
    budget.check_chat(chat_with([with_patterns("^[a-z]{1,1000}$")]), RequestBudget(max_pattern_repeat=1000))


def test_the_patterns_of_a_request_are_bounded_together() -> None:
    sixteen = [with_patterns("^.{0,256}$")] * 16  # 4,096: the default total
    budget.check_chat(chat_with(sixteen + [with_patterns("^a$", "^b+$")] * 100), LIMITS)  # uncounted ones are free
    error = refused(chat_with(sixteen + [with_patterns("^.{0,2}$")]))
    assert error.param == "tools" and "4098" in error.message
    assert refused(chat_with([with_patterns("^a{3}$")], with_patterns(*["^.{0,256}$"] * 17))).param == "response_format"
    limits = RequestBudget(max_pattern_repeat_total=10)
    assert refused(chat_with([with_patterns("^a{6}$", "^b{5}$")]), limits).param == "tools"


def test_a_128_tool_request_that_would_compile_for_minutes_takes_no_preparation_thread() -> None:
    """Each of these tools' patterns took about 11 s to compile on a 2-core CPU: about 24 minutes
    of one preparation thread for the request. It is refused on the event loop."""
    prompts = Prompts()
    served = ingress({"gen": Generator()}, prompts)  # ingress.limits: the defaults
    request = chat_with([with_patterns("^[a-z]{1,4000}$")] * MAX_TOOLS)

    with pytest.raises(RequestTooLargeError) as caught:
        asyncio.run(served.chat(request))
    assert caught.value.param == "tools"
    assert prompts.threads == [] and served.preparation.executor._threads == set()


def test_the_bounds_are_configurable() -> None:
    config = AppConfig.model_validate({"ingress": {"limits": {"max_pattern_repeat": 64,
                                                              "max_pattern_repeat_total": 512}}})
    assert (config.ingress.limits.max_pattern_repeat, config.ingress.limits.max_pattern_repeat_total) == (64, 512)
    with pytest.raises(ValueError):
        RequestBudget(max_pattern_repeat=0)
