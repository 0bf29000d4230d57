"""Half-precision parity of the encoder engines against float32 (shared by tests/unit and tests/gpu).

The classifier is MiniLM with a mean-pooling head whose rows are the (normalised) mean token
states of one prototype sentence per label: a real encoder with clear margins, so that labels
are stable across dtypes and a flipped label would be a real defect, not a coin toss.
"""

from __future__ import annotations

from pathlib import Path

LABELS = ["finance", "sport", "technology"]
PROTOTYPES = [
    "The stock market fell as investors sold shares and bank profits dropped.",
    "The striker scored twice and the team won the football match.",
    "The new smartphone has a faster chip and better software.",
]
TEXTS = [
    "Shares of the bank rose after strong quarterly earnings.",
    "Inflation and interest rates worry the bond market.",
    "The goalkeeper saved a penalty in the final minute.",
    "She won the tennis championship in three sets.",
    "The laptop ships with a new processor and more memory.",
    "Engineers released an update to the operating system.",
    "ok",
    "The coach praised the players after the victory, and fans celebrated in the streets. " * 6,
]
PROB_TOLERANCE = 0.02
"""Largest difference of any probability between a half-precision run and float32."""
COSINE_TOLERANCE = 0.999
"""Smallest cosine similarity of a half-precision embedding to its float32 one."""
HEAD_SCALE = 3.0


def prototype_classifier(folder: Path) -> Path:
    """Save the prototype classifier (MiniLM, mean head) with its tokenizer into ``folder``."""
    import torch
    from transformers import AutoTokenizer

    from maas.engines.classifier_heads import new_classifier
    from maas.engines.windows import mean_of_tokens
    from maas.storage.embedded import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    model = new_classifier(minilm_path(), LABELS, "mean").eval()
    batch = tokenizer(PROTOTYPES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model.encoder(**batch).last_hidden_state
        rows = torch.nn.functional.normalize(mean_of_tokens(hidden, batch["attention_mask"]), dim=1)
        model.classifier.weight.copy_(HEAD_SCALE * rows)
        model.classifier.bias.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def max_prob_difference(reference: list, other: list) -> float:
    """Largest absolute difference of any label's probability between two classifications."""
    return max(abs(a - b) for r, o in zip(reference, other, strict=True)
               for a, b in zip(r.probs, o.probs, strict=True))


def min_cosine(reference: list, other: list) -> float:
    """Smallest cosine similarity between matching (unit-length) embeddings."""
    return min(sum(a * b for a, b in zip(r.vector, o.vector, strict=True))
               for r, o in zip(reference, other, strict=True))
