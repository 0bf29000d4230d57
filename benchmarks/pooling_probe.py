"""Which state of all-MiniLM-L6-v2 carries a text's topic: [CLS] or the mean of the tokens?

A linear probe: the encoder stays frozen, each article of the `topic` task (BBC News) is read as
the served classifier reads it (up to 4 windows of 256 tokens, averaged), and a logistic
regression is fitted on the training split's features. Its macro-F1 on the validation and test
splits, for both poolings, is printed side by side. This is why ``cluster/train-topic.yaml``
trains with ``pooling: mean``. About 4 minutes on 2 idle cores::

    .venv/bin/python -m benchmarks.pooling_probe
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from transformers import AutoModel, AutoTokenizer

from maas.engines.windows import mean_of_tokens, per_text_mean
from maas.storage.embedded import minilm_path
from pipelines.training.training_data import Example, load_task, split_dataset, task_labels


def features(model, tokenizer, texts: list[str], max_seq_len: int, max_windows: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Each text's [CLS] state and token mean, averaged over its windows (one encoder pass)."""

    def both(inputs) -> torch.Tensor:  # noqa: ANN001
        hidden = model(**inputs).last_hidden_state
        return torch.cat([hidden[:, 0], mean_of_tokens(hidden, inputs["attention_mask"])], dim=-1)

    rows = per_text_mean(model, tokenizer, texts, max_seq_len, max_windows, both).numpy()
    width = model.config.hidden_size
    return {"cls": rows[:, :width], "mean": rows[:, width:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--max-windows", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    labels = list(task_labels("topic"))
    splits = split_dataset(load_task("topic"), seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    start = time.perf_counter()
    parts: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for name, examples in (("train", splits.train), ("val", splits.validation), ("test", splits.test)):
        parts[name] = (features(model, tokenizer, _texts(examples), args.max_seq_len, args.max_windows),
                       np.array([labels.index(label) for _, label in examples]))
    print(f"features of {sum(len(y) for _, y in parts.values())} articles in {time.perf_counter() - start:.0f}s\n")
    print("| pooling | C | validation macro-F1 | test macro-F1 |\n|---|---:|---:|---:|")
    for pooling in ("cls", "mean"):
        for c in (1.0, 10.0):
            probe = LogisticRegression(C=c, max_iter=3000).fit(parts["train"][0][pooling], parts["train"][1])
            scores = [f1_score(y, probe.predict(x[pooling]), average="macro") for x, y in (parts["val"], parts["test"])]
            print(f"| {pooling} | {c:g} | {scores[0]:.3f} | {scores[1]:.3f} |")


def _texts(examples: list[Example]) -> list[str]:
    return [text for text, _ in examples]


if __name__ == "__main__":
    main()
