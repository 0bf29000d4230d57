"""Generator tasks for LoRA adapters: the prompts, the expected one-word answers and their scoring.

A generator task turns a labelled text into a chat prompt whose right answer is the label as one
word (``lora-topic``: a BBC article -> ``business``; ``lora-sentiment``: a tweet -> ``negative``).
The text is cut to ``max_text_tokens`` tokens of the base model's tokenizer, so prompts stay short
on 2 cores. The prompt token ids are the chat template rendered as text and then encoded without
special tokens: exactly what the service's tokenizer deployment sends to vLLM for a chat request
with the same messages (:meth:`maas.engines.tokenizer.Tokenizers.encode_chat`).

Scoring is exact match: the generated answer, stripped of spaces, surrounding punctuation and
case, must be the label.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

GENERATOR_TASKS = ("lora-topic", "lora-sentiment")
"""The built-in generator tasks of ``maas train``."""


class GeneratorTask(BaseModel):
    """A classification dataset asked as a question whose answer is one word."""

    model_config = ConfigDict(frozen=True)

    name: str
    data_task: str  # the labelled data (pipelines.training.training_data): 'topic' or 'sentiment'
    labels: tuple[str, ...]
    question: str  # {labels} is replaced by the labels, e.g. "business, ... or tech"


def generator_task(name: str) -> GeneratorTask:
    """The built-in generator task ``name``; ValueError for an unknown one."""
    from pipelines.training.training_data import task_labels

    if name == "lora-topic":
        return GeneratorTask(name=name, data_task="topic", labels=task_labels("topic"),
                             question="Which topic is this news article about: {labels}? "
                                      "Answer with one word.")
    if name == "lora-sentiment":
        return GeneratorTask(name=name, data_task="sentiment", labels=task_labels("sentiment"),
                             question="Is the sentiment of this tweet {labels}? Answer with one word.")
    raise ValueError(f"unknown generator task {name!r}; expected one of {GENERATOR_TASKS}")


def label_list(labels: Sequence[str]) -> str:
    """``a, b or c``."""
    return f"{', '.join(labels[:-1])} or {labels[-1]}" if len(labels) > 1 else labels[0]


def truncate_text(tokenizer: Any, text: str, max_tokens: int) -> str:
    """The first ``max_tokens`` tokens of ``text`` as text (whole text if shorter)."""
    ids = tokenizer.encode(" ".join(text.split()), add_special_tokens=False)
    return tokenizer.decode(ids[:max_tokens]).strip()


def build_messages(task: GeneratorTask, text: str) -> list[dict[str, str]]:
    """The chat messages asking ``task``'s question about an already truncated ``text``."""
    question = task.question.format(labels=label_list(task.labels))
    return [{"role": "user", "content": f"{text}\n\n{question}"}]


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat prompt, as the service's tokenizer deployment makes them."""
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(rendered, add_special_tokens=False))


def answer_ids(tokenizer: Any, label: str) -> list[int]:
    """Token ids of the expected answer: the label, then the end-of-turn token."""
    ids = list(tokenizer.encode(label, add_special_tokens=False))
    return [*ids, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids


def normalize_answer(answer: str) -> str:
    """The answer's first word, lower-cased, without surrounding punctuation."""
    words = answer.strip().split()
    return words[0].strip(string.punctuation).lower() if words else ""


def exact_match(answers: Sequence[str], labels: Sequence[str]) -> float:
    """Share of answers whose normalized form is their label."""
    if len(answers) != len(labels):
        raise ValueError("answers and labels differ in length")
    if not labels:
        return float("nan")
    return sum(normalize_answer(a) == label.lower() for a, label in zip(answers, labels)) / len(labels)


def mentioned_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label whose word comes first in a free-form answer ("This article is about sports."
    -> ``sports``), or None: a lenient reading for a model that does not answer in one word."""
    words = [w.strip(string.punctuation).lower() for w in answer.split()]
    for word in words:
        for label in labels:
            if word == label.lower():
                return label
    return None


def lenient_match(answers: Sequence[str], labels: Sequence[str], choices: Sequence[str]) -> float:
    """Share of answers whose first mentioned label (:func:`mentioned_label`) is their label."""
    if not labels:
        return float("nan")
    return sum(mentioned_label(a, choices) == label for a, label in zip(answers, labels, strict=True)) / len(labels)


def answer_counts(answers: Sequence[str]) -> dict[str, int]:
    """How often each normalized answer was given (what a model tends to say)."""
    counts: dict[str, int] = {}
    for answer in answers:
        key = normalize_answer(answer) or "(empty)"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))
