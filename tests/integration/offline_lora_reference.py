"""vLLM's offline ``LLM`` with LoRA adapters: the reference for the served adapters' greedy answers.

Run as a script (vLLM starts its engine in a child process): reads a JSON job from argv[1]
(``model_dir``, ``max_model_len``, ``max_tokens``, ``max_lora_rank``, ``messages``: a list of chats,
``adapters``: {adapter id: folder}), writes ``{"base": [...], "<adapter id>": [...]}`` (the greedy
answer texts per chat) to argv[2].
"""

import json
import os
import sys


def main() -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from maas.engines.generator import resolve_dtype

    job = json.loads(open(sys.argv[1]).read())
    llm = LLM(model=job["model_dir"], dtype=resolve_dtype("auto", on_gpu=False), max_model_len=job["max_model_len"],
              enforce_eager=True, seed=0, enable_lora=True, max_loras=2, max_lora_rank=job["max_lora_rank"])
    params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"])
    result = {"base": [o.outputs[0].text for o in llm.chat(job["messages"], params)]}
    for number, (adapter_id, folder) in enumerate(sorted(job["adapters"].items()), start=1):
        lora = LoRARequest(adapter_id, number, folder)
        result[adapter_id] = [o.outputs[0].text for o in llm.chat(job["messages"], params, lora_request=lora)]
    with open(sys.argv[2], "w") as out:
        json.dump(result, out)
    llm.llm_engine.engine_core.shutdown()  # stops vLLM's engine processes (see __main__)


if __name__ == "__main__":
    main()
    # The result is written and the engine stopped: skip the interpreter's teardown, where
    # vLLM's CPU build has aborted the process ("terminate called without an active
    # exception", SIGABRT).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
