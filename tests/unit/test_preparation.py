"""maas/serving/preparation.py: the ingress prepares generation requests (template, tokens, schemas) in
its thread pool, so one slow preparation does not hold up another request's answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from maas.config import AppConfig, IngressConfig
from maas.limits import RequestBudget
from maas.protocol.chat import ChatCompletionRequest
from maas.protocol.errors import ContextLengthExceededError, ModelNotFoundError, RequestTooLargeError
from tests.unit.ingress_fakes import MAX_CHARS, Generator, Prompts, app, chat, ingress


def test_a_slow_preparation_does_not_delay_another_answer(tmp_path: Path) -> None:
    prompts = Prompts(slow={"slow"})
    asgi, secret = app(tmp_path, {"slow": Generator(), "fast": Generator()}, prompts)

    async def main() -> None:
        transport = httpx.ASGITransport(app=asgi)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as http:
            slow = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat("slow", stream=False)))
            while not prompts.threads:  # the slow request is preparing (it waits for the gate)
                await asyncio.sleep(0.005)
            fast = await http.post("/v1/chat/completions", json=chat("fast", stream=False))
            assert fast.status_code == 200 and not slow.done()
            prompts.gate.set()  # only now may the slow preparation end
            assert (await slow).status_code == 200

    asyncio.run(main())
    assert prompts.released == [True]  # the gate opened while the slow one was still preparing
    assert all(name.startswith("maas-prepare") for name in prompts.threads)


def test_an_unknown_model_or_a_far_too_long_prompt_is_refused_before_a_thread_is_used() -> None:
    prompts = Prompts()
    served = ingress({"gen": Generator()}, prompts)
    unknown = ChatCompletionRequest.model_validate(chat("nope", stream=False))
    long = ChatCompletionRequest.model_validate(
        {**chat("gen", stream=False), "messages": [{"role": "user", "content": "x" * (MAX_CHARS + 1)}]})

    async def main() -> None:
        with pytest.raises(ModelNotFoundError):
            await served.open_chat_stream(unknown)
        with pytest.raises(ContextLengthExceededError):
            await served.chat(long)

    asyncio.run(main())
    assert prompts.threads == [] and served.preparation.executor._threads == set()


def test_a_request_over_the_budget_by_its_fields_is_refused_before_a_thread_is_used() -> None:
    """The budget's cheap checks (sequences, tools, schema size) run on the loop, before the pool."""
    prompts = Prompts()
    served = ingress({"gen": Generator()}, prompts)
    served.config = AppConfig(generators=list(served.generator_configs.values()),
                              ingress=IngressConfig(limits=RequestBudget(max_sequences=2)))
    three = ChatCompletionRequest.model_validate({**chat("gen", stream=False), "n": 3})

    with pytest.raises(RequestTooLargeError) as refused:
        asyncio.run(served.chat(three))
    assert refused.value.param == "n"
    assert prompts.threads == [] and served.preparation.executor._threads == set()
