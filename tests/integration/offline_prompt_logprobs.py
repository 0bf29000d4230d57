"""vLLM's offline ``LLM``: the log probabilities of each prompt's tokens (``prompt_logprobs``), the
reference of ``echo`` + ``logprobs`` on ``/v1/completions``.

Run as a script (vLLM starts its engine in a child process): reads a JSON job from argv[1],
writes, per prompt, the token ids and each one's log probability (null first) to argv[2].
"""

import json
import os
import sys


def main() -> None:
    from vllm import LLM, SamplingParams

    from maas.engines.generator import resolve_dtype

    job = json.loads(open(sys.argv[1]).read())
    llm = LLM(model=job["model_dir"], dtype=resolve_dtype("auto", on_gpu=False), max_model_len=job["max_model_len"],
              enforce_eager=True, seed=0)
    outputs = llm.generate(job["prompts"], SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1))
    result = [{"token_ids": list(o.prompt_token_ids),
               "logprobs": [None if position is None else position[token_id].logprob
                            for token_id, position in zip(o.prompt_token_ids, o.prompt_logprobs)]}
              for o in outputs]
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
