"""vLLM's offline ``LLM`` on the same model and parameters: the reference for greedy outputs.

Run as a script (vLLM starts its engine in a child process): reads a JSON job from argv[1],
writes the outputs as JSON to argv[2].
"""

import json
import os
import sys


def main() -> None:
    from vllm import LLM, SamplingParams

    from maas.engines.generator import resolve_dtype

    job = json.loads(open(sys.argv[1]).read())
    # The dtype the service picks for its default ``auto`` on this machine.
    llm = LLM(model=job["model_dir"], dtype=resolve_dtype("auto", on_gpu=False), max_model_len=job["max_model_len"],
              enforce_eager=True, seed=0, tensor_parallel_size=job.get("tensor_parallel_size", 1))
    params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"])
    completions = llm.generate(job["prompts"], params)
    chats = llm.chat([[m] for m in job.get("chat_messages", [])], params)
    result = {
        "completions": [{"text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids),
                         "prompt_tokens": len(o.prompt_token_ids)} for o in completions],
        "chats": [{"text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids),
                   "prompt_tokens": len(o.prompt_token_ids)} for o in chats],
    }
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
