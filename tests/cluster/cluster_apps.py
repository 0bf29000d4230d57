"""The maas application the cluster tests deploy: a tiny classifier, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_CLASSIFIER = "sentiment-tiny"
LABELS = ("negative", "neutral", "positive")


def build_tiny_classifier(path: Path) -> Path:
    """MiniLM with a fresh 3-label head (seeded, scaled so labels are far apart), saved to ``path``.

    Untrained: the cluster tests check that every route gives the same answer, not accuracy.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from maas.storage.embedded import minilm_path

    torch.manual_seed(0)
    base = minilm_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    with torch.no_grad():
        model.classifier.weight.normal_(0, 4.0)
        model.classifier.bias.zero_()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return path


def classifier_only_app(model_dir: Path, classifier: dict[str, Any]) -> dict[str, Any]:
    """``args`` of a maas application that serves only the tiny classifier (no generator)."""
    return {
        "generators": [],
        "classifier": {
            "models": [{"name": TINY_CLASSIFIER, "path": str(model_dir), "max_seq_len": 64}],
            "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.005, "torch_threads": 1},
            "deployment": classifier,
        },
        "tokenizer": {"deployment": {"num_cpus": 0.1, "max_ongoing_requests": 256}},
        "ingress": {"deployment": {"num_cpus": 0.1, "max_ongoing_requests": 256}},
    }


def write_serve_config(path: Path, http_port: int, args: dict[str, Any]) -> Path:
    """A Serve config file with the maas application built from ``args``, proxy on the head only."""
    path.write_text(yaml.safe_dump({
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [{"name": "maas", "route_prefix": "/",
                          "import_path": "pipelines.app:build_app", "args": args}],
    }, sort_keys=False))
    return path
