"""Reading texts as windows of tokens, and pooling over tokens and windows: what the served
classifiers, training, the linear probe and the benchmarks share (plain torch, no Serve).

A text longer than ``max_seq_len`` tokens is read as up to ``max_windows`` consecutive windows;
its logits (or features) are the mean over its windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def text_windows(
    tokenizer: Any, texts: Sequence[str], max_seq_len: int, max_windows: int
) -> list[list[list[int]]]:
    """Token ids of each text as up to ``max_windows`` consecutive windows of ``max_seq_len``.

    Every window carries the model's special tokens; the first window is exactly the text
    truncated to ``max_seq_len``, so ``max_windows=1`` is plain truncation. Training, the test
    report and the served classifier all read texts through this one function.
    """
    encoded = tokenizer(list(texts), truncation=True, max_length=max_seq_len,
                        return_overflowing_tokens=max_windows > 1)
    owners = encoded.get("overflow_to_sample_mapping", range(len(texts)))
    windows: list[list[list[int]]] = [[] for _ in texts]
    for ids, owner in zip(encoded["input_ids"], owners):
        if len(windows[owner]) < max_windows:
            windows[owner].append(list(ids))
    return windows


def mean_by_owner(values: Any, owners: Sequence[int], count: int) -> Any:
    """Row means of ``values`` grouped by ``owners`` (the windows of each text -> one row)."""
    import torch

    index = torch.tensor(owners, device=values.device)
    sums = torch.zeros((count, values.shape[-1]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, index, values)
    sizes = torch.bincount(index, minlength=count).clamp(min=1).unsqueeze(-1)
    return sums / sizes


def mean_of_tokens(hidden: Any, attention_mask: Any) -> Any:
    """Each sequence's mean of its token states ``hidden`` (batch x tokens x dim), padding excluded."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_seq_len: int,
    max_windows: int = 1,
) -> list[int]:
    """Predicted class ids of ``texts`` as the served classifier computes them (windows' mean
    logits), windows batched by similar length, without gradients."""
    logits = per_text_mean(model, tokenizer, texts, max_seq_len, max_windows,
                           lambda inputs: model(**inputs).logits)
    return logits.argmax(dim=-1).tolist()


def per_text_mean(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_seq_len: int,
    max_windows: int,
    output: Callable[[Any], torch.Tensor],
) -> torch.Tensor:
    """``output(inputs)`` (one row per window) averaged over each text's windows, in eval mode
    and without gradients; windows are batched by similar length."""
    import torch

    model.eval()
    per_text = text_windows(tokenizer, texts, max_seq_len, max_windows)
    flat = [(owner, ids) for owner, windows in enumerate(per_text) for ids in windows]
    flat.sort(key=lambda item: len(item[1]))
    rows, owners = [], []
    with torch.inference_mode():
        for batch in _chunks(flat, 64):
            padded = tokenizer.pad({"input_ids": [ids for _, ids in batch]}, return_tensors="pt")
            rows.append(output(padded.to(model.device)).float().cpu())
            owners.extend(owner for owner, _ in batch)
    if not rows:
        return torch.zeros((len(texts), model.config.num_labels))
    return mean_by_owner(torch.cat(rows), owners, len(texts))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
