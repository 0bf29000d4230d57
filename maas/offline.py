"""The environment of a maas process that loads models: the Hugging Face hub offline (every model
maas loads is local: embedded, prepared or from the registry) and, unless asked otherwise, no
tokenizers thread pool (the replicas and Ray Train workers are the parallelism).

Set before the first ``import transformers``/``vllm``; a variable already set wins.
"""

from __future__ import annotations

import os


def set_offline_env(*, tokenizer_threads: bool = False) -> None:
    """``HF_HUB_OFFLINE=1`` and, unless ``tokenizer_threads``, ``TOKENIZERS_PARALLELISM=false``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not tokenizer_threads:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
