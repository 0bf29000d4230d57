"""Grouping of dynamically batched inputs by model (used inside ``@serve.batch`` methods)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def chunked(items: list[In], size: int) -> list[list[In]]:
    """Consecutive slices of at most ``size`` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_grouped(
    items: list[tuple[str, In]],
    run: Callable[[str, list[In]], list[Out]],
    max_batch_size: int,
) -> list[Out]:
    """Run ``run(model, inputs)`` once per model (and per ``max_batch_size`` inputs).

    ``items`` are ``(model, input)`` pairs from many requests; outputs come back in the same
    order as the items.
    """
    positions: dict[str, list[int]] = {}
    for position, (model, _) in enumerate(items):
        positions.setdefault(model, []).append(position)
    results: list[Out | None] = [None] * len(items)
    for model, model_positions in positions.items():
        for part in chunked(model_positions, max_batch_size):
            outputs = run(model, [items[p][1] for p in part])
            for position, output in zip(part, outputs, strict=True):
                results[position] = output
    return results  # type: ignore[return-value]
