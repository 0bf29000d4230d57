"""Transformers engines for encoder models: sequence classification and sentence embeddings.

Plain Python, no Serve: a batch of texts in, one forward pass per model out. The deployments
add dynamic batching on top (``@serve.batch``) and call :meth:`classify` / :meth:`embed` with
the texts of many requests at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.config import EncoderModelConfig
from maas.models import resolve_model_path


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
    """A tokenizer and a transformers model loaded from a local folder, in eval mode."""

    def __init__(self, config: EncoderModelConfig, model_class: str, path: Path | None = None) -> None:
        import transformers

        path = str(path or resolve_model_path(config.path))
        self.config = config
        self.device = default_device()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = getattr(transformers, model_class).from_pretrained(path).eval().to(self.device)

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.config.max_seq_len,
            return_tensors="pt",
        ).to(self.device)


def default_device() -> str:
    """``cuda`` when the replica was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_torch_threads(threads: int) -> None:
    """Bound torch's intra-op threads so replicas on a small machine do not oversubscribe."""
    import torch

    torch.set_num_threads(threads)


class ClassifierEngine:
    """Sequence classification: every label with its probability, one forward pass per batch."""

    def __init__(self) -> None:
        self.forward_calls = 0

    @staticmethod
    def load(config: EncoderModelConfig, path: Path | None = None) -> LoadedEncoder:
        """Load a classifier from ``path`` (default: the config's path)."""
        return LoadedEncoder(config, "AutoModelForSequenceClassification", path)

    @staticmethod
    def labels(encoder: LoadedEncoder) -> list[str]:
        id2label = encoder.model.config.id2label
        return [str(id2label[i]) for i in range(len(id2label))]

    def classify(self, encoder: LoadedEncoder, texts: list[str]) -> list[Classification]:
        """Classify texts in one forward pass."""
        import torch

        batch = encoder.tokenize(texts)
        with torch.inference_mode():
            logits = encoder.model(**batch).logits.float()
        self.forward_calls += 1
        probs = torch.softmax(logits, dim=-1).cpu().tolist()
        counts = batch["attention_mask"].sum(dim=1).cpu().tolist()
        labels = self.labels(encoder)
        return [
            Classification(labels[max(range(len(p)), key=p.__getitem__)], p, labels, int(n))
            for p, n in zip(probs, counts)
        ]


class EmbeddingEngine:
    """Sentence encoders by model name: mean pooling over tokens, L2-normalised."""

    def __init__(self, configs: list[EncoderModelConfig]) -> None:
        self.models = {c.name: LoadedEncoder(c, "AutoModel") for c in configs}
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
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().tolist()
        counts = batch["attention_mask"].sum(dim=1).cpu().tolist()
        return [Embedding(v, int(n)) for v, n in zip(vectors, counts)]

    def ping(self) -> None:
        for encoder in self.models.values():
            self.embed(encoder, ["ping"])
