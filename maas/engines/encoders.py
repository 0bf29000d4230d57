"""Transformers engines for encoder models: sequence classification and sentence embeddings.

Plain Python, no Serve: a batch of texts in, one forward pass per model out. The deployments
add dynamic batching on top (``@serve.batch``) and call :meth:`classify` / :meth:`embed` with
the texts of many requests at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.config import EncoderModelConfig
from maas.engines.windows import mean_by_owner, mean_of_tokens, text_windows  # noqa: F401 - used and re-exported
from maas.storage.embedded import resolve_model_path


@dataclass
class Classification:
    """Probabilities of every label for one text."""

    label: str
    probs: list[float]
    labels: list[str]
    num_tokens: int


@dataclass
class Embedding:
    """A unit-length sentence embedding for one text."""

    vector: list[float]
    num_tokens: int


class LoadedEncoder:
    """A tokenizer and a transformers model loaded from a local folder, in eval mode, on
    ``device`` (default: the replica's, see :func:`default_device`) in the config's dtype."""

    def __init__(
        self, config: EncoderModelConfig, load_model: Callable[[str], Any], path: Path | None = None,
        device: str | None = None,
    ) -> None:
        import transformers

        path = str(path or resolve_model_path(config.path))
        self.config = config
        self.device = device or default_device()
        self.dtype = resolve_encoder_dtype(config.dtype, self.device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = load_model(path).eval().to(self.device, dtype=torch_dtype(self.dtype))
        if config.quantize == "int8" and self.device == "cpu":
            model = quantize_int8(model)
        self.model = model

    def windows(self, texts: list[str]) -> Any:
        """Each text's windows (see :func:`text_windows`), flattened and padded, with owners."""
        per_text = text_windows(self.tokenizer, texts, self.config.max_seq_len, self.config.max_windows)
        owners = [i for i, windows in enumerate(per_text) for _ in windows]
        flat = [ids for windows in per_text for ids in windows]
        batch = self.tokenizer.pad({"input_ids": flat}, return_tensors="pt").to(self.device)
        return batch, owners

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.config.max_seq_len,
            return_tensors="pt",
        ).to(self.device)


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (CPU kernels: fbgemm on x86)."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def resolve_encoder_dtype(dtype: str, device: str) -> str:
    """The dtype an encoder runs in on ``device``. ``auto``: float32 on a CPU; on a GPU bfloat16
    where it computes it (Ampere and newer), else float16. An explicit dtype is kept."""
    if dtype != "auto":
        return dtype
    if device == "cpu":
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def torch_dtype(name: str) -> Any:
    """The ``torch.dtype`` called ``name`` (``float32``, ``bfloat16``, ``float16``)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_device() -> str:
    """``cuda`` when the replica was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_torch_threads(threads: int) -> None:
    """Bound torch's intra-op threads so replicas on a small machine do not oversubscribe."""
    import torch

    torch.set_num_threads(threads)


_THREAD_STATE = threading.local()


def use_torch_threads(threads: int) -> None:
    """Run the calling thread's next torch operations on ``threads`` intra-op threads.

    Set in each calling thread: OpenMP's thread count belongs to the thread that sets it, and a
    new executor thread starts at ``OMP_NUM_THREADS`` (Ray sets it from the replica's
    ``num_cpus``: 1 for a fractional one; unset, the machine's cores) whatever the replica's
    ``__init__`` set, while ``torch.get_num_threads()`` there may report the process's value."""
    if getattr(_THREAD_STATE, "torch_threads", None) == threads:
        return
    import torch

    torch.set_num_threads(threads)
    _THREAD_STATE.torch_threads = threads


class ClassifierEngine:
    """Sequence classification: every label with its probability, one forward pass per batch."""

    def __init__(self) -> None:
        self.forward_calls = 0

    @staticmethod
    def load(config: EncoderModelConfig, path: Path | None = None, device: str | None = None) -> LoadedEncoder:
        """Load a classifier from ``path`` (default: the config's path), with the head it was
        trained with (see :mod:`maas.engines.classifier_heads`)."""
        from maas.engines.classifier_heads import load_classifier

        return LoadedEncoder(config, load_classifier, path, device)

    @staticmethod
    def labels(encoder: LoadedEncoder) -> list[str]:
        id2label = encoder.model.config.id2label
        return [str(id2label[i]) for i in range(len(id2label))]

    def classify(self, encoder: LoadedEncoder, texts: list[str]) -> list[Classification]:
        """Classify texts in one forward pass (a long text's windows' logits are averaged)."""
        batch, owners = encoder.windows(texts)
        return self.classify_windows(encoder, batch, owners, len(texts))

    def classify_windows(
        self, encoder: LoadedEncoder, batch: Any, owners: list[int], count: int
    ) -> list[Classification]:
        """The forward pass of :meth:`classify` over tokenized windows (``encoder.windows``)."""
        import torch

        with torch.inference_mode():
            window_logits = encoder.model(**batch).logits.float()
        self.forward_calls += 1
        logits = mean_by_owner(window_logits, owners, count)
        probs = torch.softmax(logits, dim=-1).cpu().tolist()
        counts = [0] * count
        for owner, tokens in zip(owners, batch["attention_mask"].sum(dim=1).tolist()):
            counts[owner] += int(tokens)
        labels = self.labels(encoder)
        return [
            Classification(labels[max(range(len(p)), key=p.__getitem__)], p, labels, int(n))
            for p, n in zip(probs, counts)
        ]


def _load_encoder(path: str) -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(path)


class EmbeddingEngine:
    """Sentence encoders by model name: mean pooling over tokens, L2-normalised."""

    def __init__(self, configs: list[EncoderModelConfig], device: str | None = None) -> None:
        self.models = {c.name: LoadedEncoder(c, _load_encoder, device=device) for c in configs}
        self.forward_calls = 0

    def dimensions(self, model: str) -> int:
        return int(self.models[model].model.config.hidden_size)

    def embed(self, encoder: LoadedEncoder, texts: list[str]) -> list[Embedding]:
        """Embed texts in one forward pass."""
        import torch

        batch = encoder.tokenize(texts)
        with torch.inference_mode():
            hidden = encoder.model(**batch).last_hidden_state.float()
        self.forward_calls += 1
        pooled = mean_of_tokens(hidden, batch["attention_mask"])
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().tolist()
        counts = batch["attention_mask"].sum(dim=1).cpu().tolist()
        return [Embedding(v, int(n)) for v, n in zip(vectors, counts)]

    def ping(self) -> None:
        for encoder in self.models.values():
            self.embed(encoder, ["ping"])
