"""vLLM's offline ``LLM`` on the served model: the reference the integration tests compare with.

Run as a script (vLLM starts its engine in a child process): ``offline_vllm.py --serve ENGINE``
starts the engine the JSON file ENGINE describes (``model_dir``, ``max_model_len`` and, for LoRA,
``lora: {"max_lora_rank": R}``), prints ``ready``, then answers jobs for as long as its stdin is
open: each line is ``JOB OUT`` (two paths); it runs each part of the JSON job in JOB, writes the
results as JSON to OUT and prints ``done`` (or ``failed``). vLLM's own output goes to stderr.
``tests/integration/offline.py`` drives it: one engine start serves every job of a test session
(on 2 cores a vLLM start is a minute of the suite).

A job holds any of

* ``generate``: ``{"prompts": [...], "max_tokens": N}``: greedy ``LLM.generate``;
* ``chat``: ``{"messages": [[...], ...], "max_tokens": N}``: greedy ``LLM.chat``, one chat each;
* ``prompt_logprobs``: ``{"prompts": [...]}``: each prompt's token ids and each one's log
  probability (null first), the reference of ``echo`` + ``logprobs`` on ``/v1/completions``;
* ``lora``: ``{"adapters": {adapter id: folder}}`` (the engine started with LoRA): ``chat`` is
  answered by the base model (``"base"``) and by each adapter.

``python -m`` is not needed: the repository root is put on ``sys.path`` for ``maas``.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def start_engine(engine: dict[str, Any]) -> Any:
    from vllm import LLM

    from maas.engines.generator import resolve_dtype

    lora = engine.get("lora")
    extra = {"enable_lora": True, "max_loras": 2, "max_lora_rank": lora["max_lora_rank"]} if lora else {}
    # The dtype the service picks for its default ``auto`` on this machine.
    return LLM(model=engine["model_dir"], dtype=resolve_dtype("auto", on_gpu=False),
               max_model_len=engine["max_model_len"], enforce_eager=True, seed=0, **extra)


def greedy(max_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def answers(outputs: list[Any]) -> list[dict[str, Any]]:
    return [{"text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids),
             "prompt_tokens": len(o.prompt_token_ids)} for o in outputs]


def prompt_logprobs(llm: Any, prompts: list[str]) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    # One prompt per call: the engine runs with LoRA on, where vLLM's V1 computes prompt log
    # probabilities only for a batch of one request (vllm-project/vllm#16668); the service refuses
    # them on a LoRA generator (maas.generation_rules.params.check_prompt_logprobs).
    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
    outputs = [llm.generate([prompt], params)[0] for prompt in prompts]
    return [{"token_ids": list(o.prompt_token_ids),
             "logprobs": [None if position is None else position[token_id].logprob
                          for token_id, position in zip(o.prompt_token_ids, o.prompt_logprobs)]}
            for o in outputs]


LORA_IDS: dict[str, int] = {}
"""vLLM's integer id of each adapter folder: one per folder for the life of the engine (an engine
that answers several jobs must not take a new folder for an id it has loaded)."""


def lora_chats(llm: Any, part: dict[str, Any], adapters: dict[str, str]) -> dict[str, list[str]]:
    from vllm.lora.request import LoRARequest

    params = greedy(part["max_tokens"])
    result = {"base": [o.outputs[0].text for o in llm.chat(part["messages"], params)]}
    for adapter_id, folder in sorted(adapters.items()):
        lora = LoRARequest(adapter_id, LORA_IDS.setdefault(folder, len(LORA_IDS) + 1), folder)
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


def serve(engine: dict[str, Any]) -> None:
    """Answer jobs from stdin on one engine until stdin closes (see the module's docstring)."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # vLLM's logs (and its engine processes' output) go to stderr
    llm = start_engine(engine)
    print("ready", file=replies, flush=True)
    for line in sys.stdin:
        job_file, out_file = line.split()
        try:
            Path(out_file).write_text(json.dumps(run(llm, json.loads(Path(job_file).read_text()))))
            print("done", file=replies, flush=True)
        except Exception:  # noqa: BLE001 - the caller fails its test; the engine serves the next job
            import traceback

            traceback.print_exc()
            print("failed", file=replies, flush=True)
    llm.llm_engine.engine_core.shutdown()  # stops vLLM's engine processes (see __main__)


def main() -> None:
    if sys.argv[1:2] != ["--serve"] or len(sys.argv) != 3:
        sys.exit("usage: offline_vllm.py --serve ENGINE.json")
    serve(json.loads(Path(sys.argv[2]).read_text()))


if __name__ == "__main__":
    main()
    # The results are written and the engine stopped: skip the interpreter's teardown, where
    # vLLM's CPU build has aborted the process ("terminate called without an active
    # exception", SIGABRT).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
