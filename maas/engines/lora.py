"""LoRA adapters on a vLLM generator (plain Python, no Serve).

vLLM serves many PEFT adapters over one base model (``enable_lora``; on a CPU through its
``PunicaWrapperCPU``): each request names its adapter with a ``LoRARequest`` whose integer id is
unique per adapter in the engine. This module gives the engine arguments of a generator's
:class:`~maas.config.LoraOptions`, reads what an adapter folder says about itself (rank, target
modules, base model) and checks it against what the generator serves before vLLM loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from maas.config import GeneratorModelConfig
from maas.protocol.errors import InvalidRequestError

ADAPTER_CONFIG = "adapter_config.json"


class AdapterInfo(BaseModel):
    """What a PEFT adapter folder's ``adapter_config.json`` says."""

    path: str
    rank: int = Field(ge=1)
    alpha: float
    target_modules: list[str]


def lora_engine_kwargs(config: GeneratorModelConfig) -> dict[str, Any]:
    """vLLM engine arguments of the generator's LoRA settings (none when LoRA is off)."""
    lora = config.lora
    if not lora.enabled:
        return {}
    return {"enable_lora": True, "max_loras": lora.max_loras, "max_lora_rank": lora.max_rank,
            "max_cpu_loras": lora.max_loaded_adapters}


def read_adapter(path: str | Path) -> AdapterInfo:
    """The rank and target modules of the PEFT adapter in ``path``; ValueError if it is none."""
    folder = Path(path)
    try:
        data = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder} is not a PEFT adapter folder (no readable {ADAPTER_CONFIG})") from exc
    modules = data.get("target_modules") or []
    if isinstance(modules, str):
        modules = [modules]
    return AdapterInfo(path=str(folder), rank=int(data.get("r", 0)), alpha=float(data.get("lora_alpha", 0)),
                       target_modules=sorted(modules))


def check_adapter(config: GeneratorModelConfig, info: AdapterInfo) -> None:
    """Refuse an adapter the generator cannot serve: LoRA off, or a rank over ``max_rank``."""
    if not config.lora.enabled:
        raise InvalidRequestError(f"The model '{config.name}' is not served with LoRA adapters.")
    if info.rank > config.lora.max_rank:
        raise InvalidRequestError(
            f"The adapter in {info.path} has rank {info.rank}, above the max_lora_rank "
            f"{config.lora.max_rank} of '{config.name}'.")


class LoraIds:
    """Stable integer ids (vLLM's ``lora_int_id``) for adapter ids such as ``topic-lora/v2``."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def __call__(self, adapter_id: str) -> int:
        if adapter_id not in self._ids:
            self._ids[adapter_id] = len(self._ids) + 1
        return self._ids[adapter_id]


def lora_request(adapter_id: str, int_id: int, path: str | Path, base_model: str) -> Any:
    """vLLM's ``LoRARequest`` for one adapter version."""
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=adapter_id, lora_int_id=int_id, lora_path=str(path),
                       base_model_name=base_model)
