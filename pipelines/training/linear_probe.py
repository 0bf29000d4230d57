"""LP-FT: fit a new classification head as a linear probe on the frozen encoder, then fine-tune.

Fine-tuning from a randomly initialised head first sends large, noisy gradients through the
pretrained encoder while the head is still wrong, and distorts the features the encoder was
pretrained to produce. Fitting the head first (logistic regression on the frozen features, with
its regularisation chosen on the validation split), then fine-tuning everything from there,
avoids that (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution"). ``TrainConfig.head_init = "probe"`` turns it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from maas.engines.windows import per_text_mean

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROBE_C = (0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths tried; the best on validation wins


@dataclass(frozen=True)
class ProbeHead:
    """A fitted linear head (``num_labels x hidden`` weight, ``num_labels`` bias) and how it was chosen."""

    weight: np.ndarray
    bias: np.ndarray
    c: float
    val_macro_f1: float


def classification_head(model: PreTrainedModel) -> torch.nn.Linear:
    """The model's linear head ``classifier`` (BERT-family heads and ``MeanPooledClassifier``)."""
    import torch

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"head_init 'probe' needs a model whose `classifier` is one linear layer; "
            f"{type(model).__name__} has {type(head).__name__}"
        )
    return head


def head_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_seq_len: int,
    max_windows: int,
) -> np.ndarray:
    """What the head reads for each text, averaged over its windows (``len(texts) x hidden``).

    The head is linear, so a head fitted on these averages predicts exactly as the served
    model does (the mean of the windows' logits).
    """
    head = classification_head(model)
    if not texts:
        return np.zeros((0, head.in_features), dtype=np.float32)
    captured: list[Any] = []
    hook = head.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))

    def features(inputs: Any) -> torch.Tensor:
        model(**inputs)
        return captured.pop()

    try:
        return per_text_mean(model, tokenizer, texts, max_seq_len, max_windows, features).numpy()
    finally:
        hook.remove()


def fit_probe(
    train_x: np.ndarray, train_y: Sequence[int], val_x: np.ndarray, val_y: Sequence[int], num_labels: int
) -> ProbeHead:
    """Multinomial logistic regression on the features, ``C`` chosen by validation macro-F1
    (the smaller ``C`` on a tie); without validation examples ``C = 1``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    best: ProbeHead | None = None
    for c in PROBE_C if len(val_y) else (1.0,):
        probe = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y)
        f1 = float(f1_score(val_y, probe.predict(val_x), average="macro")) if len(val_y) else float("nan")
        if best is None or f1 > best.val_macro_f1:
            weight, bias = _full_head(probe, num_labels)
            best = ProbeHead(weight=weight, bias=bias, c=c, val_macro_f1=f1)
    assert best is not None
    return best


def set_head(model: PreTrainedModel, probe: ProbeHead) -> None:
    """Copy the probe's weight and bias into the model's head."""
    import torch

    head = classification_head(model)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(probe.weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(probe.bias, dtype=head.bias.dtype))


def _full_head(probe: Any, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The probe as ``num_labels`` rows of softmax logits: scikit-learn keeps one row for two
    classes (the second class's margin) and none for a class absent from the training data."""
    coef, intercept = probe.coef_, probe.intercept_
    if coef.shape[0] == 1:  # binary: logits (-z/2, z/2) give the same probabilities
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weight = np.zeros((num_labels, coef.shape[1]), dtype=np.float32)
    bias = np.full(num_labels, float(intercept.min()) - 10.0, dtype=np.float32)
    for row, label in enumerate(probe.classes_):
        weight[label], bias[label] = coef[row], intercept[row]
    return weight, bias
