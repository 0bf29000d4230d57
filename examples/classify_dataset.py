"""A Ray job: classify a whole labelled data set through the live maas application.

The job is a separate driver on the cluster. It calls the ``classify`` method of the running
application's ingress through its Serve handle (no HTTP), several requests at once but never more
than ``--concurrency``, and writes every text with its label and probabilities to a JSON file.
Submit it to a running cluster from the repository root::

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        -- python examples/classify_dataset.py --model sentiment --limit 200 \\
           --output /tmp/classified.json

The texts are the first ``--limit`` examples of the task's held-out test split
(``pipelines.training.training_data``), so the printed accuracy is an honest estimate for a model the
project's pipeline trained. ``--output`` is a path on the node that runs the job driver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

Example = tuple[str, str]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Classify a data set through the live maas app.")
    parser.add_argument("--model", default="sentiment", help="served classifier name")
    parser.add_argument("--task", default="sentiment", help="data set: a pipelines.training.training_data task")
    parser.add_argument("--limit", type=int, default=200, help="texts to classify")
    parser.add_argument("--batch-size", type=int, default=8, help="texts per classify request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed request")
    parser.add_argument("--app", default="maas", help="Serve application name")
    parser.add_argument("--output", default="classified.json", help="results JSON file")
    return parser.parse_args(argv)


def load_texts(task: str, limit: int) -> list[Example]:
    """The first ``limit`` ``(text, gold label)`` pairs of the task's test split."""
    from pipelines.training.training_data import load_task, split_dataset

    return split_dataset(load_task(task)).test[:limit]  # type: ignore[arg-type]


def chunks(items: list[Example], size: int) -> list[list[Example]]:
    """``items`` cut into consecutive lists of at most ``size``."""
    return [items[i:i + size] for i in range(0, len(items), size)]


async def classify_batch(handle: Any, model: str, texts: list[str], limit: asyncio.Semaphore,
                         retries: int) -> Any:
    """One ``ClassifyRequest`` through the handle, retried with a growing pause if it fails."""
    from maas.endpoints.encoding.protocol import ClassifyRequest

    request = ClassifyRequest(model=model, input=texts)
    async with limit:
        for attempt in range(retries + 1):
            try:
                return await handle.classify.remote(request)
            except Exception as exc:  # noqa: BLE001 - a replica may die with its node: retry
                if attempt == retries:
                    raise
                print(f"[job] retrying after {type(exc).__name__}: {exc}", file=sys.stderr)
                await asyncio.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


async def classify_all(handle: Any, model: str, examples: list[Example], batch_size: int,
                       concurrency: int, retries: int) -> list[dict[str, Any]]:
    """Every example with its predicted label and probabilities, in input order."""
    limit = asyncio.Semaphore(concurrency)
    groups = chunks(examples, batch_size)
    responses = await asyncio.gather(*(
        classify_batch(handle, model, [text for text, _ in group], limit, retries) for group in groups
    ))
    results: list[dict[str, Any]] = []
    for group, response in zip(groups, responses):
        for (text, gold), data in zip(group, response.data):
            results.append({"index": len(results), "text": text, "gold": gold, "label": data.label,
                            "probs": data.probs, "labels": data.labels})
    return results


def summarize(results: list[dict[str, Any]], elapsed_s: float) -> dict[str, Any]:
    """Counts per predicted label, accuracy against the gold labels, throughput."""
    counts: dict[str, int] = {}
    for item in results:
        counts[item["label"]] = counts.get(item["label"], 0) + 1
    correct = sum(item["label"] == item["gold"] for item in results)
    return {"count": len(results), "labels": counts,
            "accuracy": round(correct / len(results), 4) if results else None,
            "elapsed_s": round(elapsed_s, 2),
            "texts_per_s": round(len(results) / elapsed_s, 1) if elapsed_s else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.environ.get("RAY_ADDRESS"):
        # The Ray of a local `maas serve` listens on loopback only; a driver joins it only with
        # this set before `import ray` (a job submitted to a cluster has RAY_ADDRESS instead).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    examples = load_texts(args.task, args.limit)
    ray.init(address="auto", namespace="serve", log_to_driver=False)
    handle = serve.get_app_handle(args.app)
    started = time.monotonic()
    results = asyncio.run(classify_all(handle, args.model, examples, args.batch_size,
                                       args.concurrency, args.retries))
    summary = summarize(results, time.monotonic() - started)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"model": args.model, "task": args.task, "summary": summary,
                                  "results": results}, indent=1))
    print(f"[job] {json.dumps(summary)} -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
