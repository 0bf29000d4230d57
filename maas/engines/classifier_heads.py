"""Sequence-classification models: transformers' own (CLS pooling) or a mean-pooling head.

transformers' ``*ForSequenceClassification`` classes classify from the first ([CLS]) token.
Sentence encoders such as all-MiniLM-L6-v2 were trained to carry a text's meaning in the *mean*
of their token states instead, and their [CLS] state is untrained for it: a linear probe on the
frozen mean beats one on [CLS] on BBC News (best validation macro-F1 0.972 vs 0.955; test
0.964-0.973 vs 0.951-0.960 over the C values tried: ``benchmarks/pooling_probe.py``). ``MeanPooledClassifier`` puts the classification head
on that mean. A model folder says which head it has in its ``config.json`` (``classifier_pooling``:
``"cls"``, the default, or ``"mean"``), and :func:`load_classifier` is the one loader that
training, reports and serving all use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from maas.config import Pooling
from maas.engines.windows import mean_of_tokens

POOLING_KEY = "classifier_pooling"


class MeanPooledClassifier(PreTrainedModel):
    """Any transformers encoder, then dropout and a linear layer on the masked mean of its
    last hidden states. Saved and loaded like any transformers model (see :func:`load_classifier`)."""

    base_model_prefix = "encoder"

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config, add_pooling_layer=False)
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if module is self.classifier:
            module.weight.data.normal_(0.0, getattr(self.config, "initializer_range", 0.02))
            module.bias.data.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **encoder_inputs: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_inputs)
        pooled = mean_of_tokens(hidden.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def new_classifier(base_model: str | Path, labels: list[str], pooling: Pooling) -> PreTrainedModel:
    """A classifier for ``labels`` on the pretrained encoder ``base_model``, with a new head."""
    label_maps = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(str(base_model), **label_maps)
    config = AutoConfig.from_pretrained(str(base_model), **label_maps)
    setattr(config, POOLING_KEY, "mean")
    # The base checkpoint's weights load into ``encoder`` (base_model_prefix); the head is new.
    return MeanPooledClassifier.from_pretrained(str(base_model), config=config)


def load_classifier(path: str | Path) -> PreTrainedModel:
    """Load a trained classifier folder with the head its config names."""
    config = AutoConfig.from_pretrained(str(path))
    if pooling_of(config) == "mean":
        return MeanPooledClassifier.from_pretrained(str(path), config=config)
    return AutoModelForSequenceClassification.from_pretrained(str(path), config=config)


def pooling_of(config: PretrainedConfig) -> Pooling:
    pooling = getattr(config, POOLING_KEY, "cls")
    if pooling not in get_args(Pooling):
        raise ValueError(f"unknown {POOLING_KEY} {pooling!r} (expected 'cls' or 'mean')")
    return pooling
