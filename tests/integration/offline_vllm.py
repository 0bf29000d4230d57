"""vLLM's offline ``LLM`` on the served model: the reference the integration tests compare with.

Run as a script (vLLM starts its engine in a child process): reads a JSON job from argv[1], runs
each of its parts on one engine and writes the results as JSON to argv[2]. One engine start
serves every part: on 2 cores a vLLM start is a minute of the suite.

The job: ``model_dir``, ``max_model_len`` and any of

* ``generate``: ``{"prompts": [...], "max_tokens": N}``: greedy ``LLM.generate``;
* ``chat``: ``{"messages": [[...], ...], "max_tokens": N}``: greedy ``LLM.chat``, one chat each;
* ``prompt_logprobs``: ``{"prompts": [...]}``: each prompt's token ids and each one's log
  probability (null first), the reference of ``echo`` + ``logprobs`` on ``/v1/completions``;
* ``lora``: ``{"max_lora_rank": R, "adapters": {adapter id: folder}}``: the engine is started with
  LoRA, and ``chat`` is answered by the base model (``"base"``) and by each adapter.

``python -m`` is not needed: the repository root is put on ``sys.path`` for ``maas``.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def start_engine(job: dict[str, Any]) -> Any:
    from vllm import LLM

    from maas.engines.generator import resolve_dtype

    lora = job.get("lora")
    extra = {"enable_lora": True, "max_loras": 2, "max_lora_rank": lora["max_lora_rank"]} if lora else {}
    # The dtype the service picks for its default ``auto`` on this machine.
    return LLM(model=job["model_dir"], dtype=resolve_dtype("auto", on_gpu=False),
               max_model_len=job["max_model_len"], enforce_eager=True, seed=0, **extra)


def greedy(max_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def answers(outputs: list[Any]) -> list[dict[str, Any]]:
    return [{"text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids),
             "prompt_tokens": len(o.prompt_token_ids)} for o in outputs]


def prompt_logprobs(llm: Any, prompts: list[str]) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1))
    return [{"token_ids": list(o.prompt_token_ids),
             "logprobs": [None if position is None else position[token_id].logprob
                          for token_id, position in zip(o.prompt_token_ids, o.prompt_logprobs)]}
            for o in outputs]


def lora_chats(llm: Any, part: dict[str, Any], adapters: dict[str, str]) -> dict[str, list[str]]:
    from vllm.lora.request import LoRARequest

    params = greedy(part["max_tokens"])
    result = {"base": [o.outputs[0].text for o in llm.chat(part["messages"], params)]}
    for number, (adapter_id, folder) in enumerate(sorted(adapters.items()), start=1):
        lora = LoRARequest(adapter_id, number, folder)
        result[adapter_id] = [o.outputs[0].text for o in llm.chat(part["messages"], params, lora_request=lora)]
    return result


def run(llm: Any, job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if "generate" in job:
        part = job["generate"]
        result["generate"] = answers(llm.generate(part["prompts"], greedy(part["max_tokens"])))
    if "chat" in job and "lora" in job:
        result["chat"] = lora_chats(llm, job["chat"], job["lora"]["adapters"])
    elif "chat" in job:
        result["chat"] = answers(llm.chat(job["chat"]["messages"], greedy(job["chat"]["max_tokens"])))
    if "prompt_logprobs" in job:
        result["prompt_logprobs"] = prompt_logprobs(llm, job["prompt_logprobs"]["prompts"])
    return result


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    llm = start_engine(job)
    Path(sys.argv[2]).write_text(json.dumps(run(llm, job)))
    llm.llm_engine.engine_core.shutdown()  # stops vLLM's engine processes (see __main__)


if __name__ == "__main__":
    main()
    # The result is written and the engine stopped: skip the interpreter's teardown, where
    # vLLM's CPU build has aborted the process ("terminate called without an active
    # exception", SIGABRT).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
