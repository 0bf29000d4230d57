"""What tokenizing a generation request costs in-process (no Ray, no vLLM)::

    .venv/bin/python -m benchmarks.tokenize_cost

The ingress tokenizes chat and completion prompts itself (:mod:`maas.serving.local_tokenizer`); this
times those calls with SmolLM2's HF fast tokenizer, and one-by-one against batch encoding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from maas.offline import set_offline_env

set_offline_env()


def per_call_ms(func: Callable[[], object], calls: int) -> float:
    for _ in range(min(50, calls)):
        func()
    start = time.perf_counter()
    for _ in range(calls):
        func()
    return 1000 * (time.perf_counter() - start) / calls


def main() -> int:
    from maas.engines.tokenizer import PromptTokenizer, TokenizerEngine, TokenizerSpec
    from maas.protocol.chat import ChatMessage
    from maas.storage.embedded import prepare_smollm2

    prompts = PromptTokenizer(TokenizerEngine([TokenizerSpec("g", str(prepare_smollm2()), 2048)]))
    messages = [ChatMessage(role="user", content="What is the capital of France?")]
    text = " ".join(["word"] * 128)
    print(f"chat_ids (chat template + encode): {per_call_ms(lambda: prompts.chat_ids('g', messages), 2000):.3f} ms")
    print(f"prompt_ids (128-word prompt): {per_call_ms(lambda: prompts.prompt_ids('g', text), 2000):.3f} ms")
    tokenizer = prompts.engine.tokenizers["g"]
    texts = [text] * 32
    one_by_one = per_call_ms(lambda: [tokenizer.encode(t) for t in texts], 100)
    batch = per_call_ms(lambda: tokenizer(texts)["input_ids"], 100)
    print(f"32 prompts: one by one {one_by_one:.2f} ms, batch encode {batch:.2f} ms "
          f"(TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
