"""Language codes and sentence splitting for translation (plain Python, no model code).

A translation request names its languages the way people do ("English", "pt-BR",
"Português"); :func:`language_code` turns a name into the base ISO 639-1 code that engines
declare their pairs in (``en``, ``pt``). Marian models translate one sentence at a time
best, so :func:`split_sentences` cuts a text into sentences (and over-long sentences at
word boundaries) while keeping the whitespace between them, and :func:`join_pieces` puts
the translated sentences back with that same whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LANGUAGE_NAMES: dict[str, str] = {
    "english": "en", "inglês": "en", "ingles": "en",
    "portuguese": "pt", "brazilian portuguese": "pt", "português": "pt", "portugues": "pt",
    "spanish": "es", "español": "es", "espanhol": "es",
    "french": "fr", "français": "fr", "francês": "fr",
    "german": "de", "deutsch": "de", "alemão": "de",
    "italian": "it", "italiano": "it",
    "dutch": "nl", "russian": "ru", "chinese": "zh", "japanese": "ja", "korean": "ko",
    "arabic": "ar", "hindi": "hi", "turkish": "tr", "polish": "pl", "swedish": "sv",
}
"""Language names (lower case, as clients write them) → ISO 639-1 code."""

_CODE = re.compile(r"^([a-z]{2,3})(?:[-_][a-z0-9]{2,8})*$")
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "sra", "jr", "st", "vs", "etc", "e.g", "i.e",
    "u.s", "u.k", "inc", "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "av", "dra", "p.ex",
})
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+(?=[\"'“‘(\[¿¡]?[A-ZÀ-Ý0-9])|\n\s*")


def language_code(name: str) -> str | None:
    """The ISO 639-1 code of a language name or tag (``pt-BR`` → ``pt``); None if unknown."""
    key = " ".join(name.strip().casefold().split())
    if key in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[key]
    match = _CODE.match(key)
    return match.group(1) if match else None


def pair_key(source: str, target: str) -> str:
    """The pair name engines declare, e.g. ``en-pt``."""
    return f"{source}-{target}"


@dataclass(frozen=True)
class Pieces:
    """A text cut into pieces to translate and the separators between them.

    ``separators[i]`` follows ``pieces[i]``; the last one is the text's trailing whitespace.
    ``leading`` is the whitespace before the first piece.
    """

    leading: str
    pieces: list[str]
    separators: list[str]


def split_sentences(text: str, max_chars: int = 400) -> Pieces:
    """Sentences of ``text`` (paragraph breaks kept); sentences over ``max_chars`` cut at spaces."""
    stripped = text.strip()
    leading = text[: len(text) - len(text.lstrip())]
    trailing = text[len(text.rstrip()):] if stripped else ""
    pieces: list[str] = []
    separators: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(stripped):
        if _ends_with_abbreviation(stripped[start : match.start()]) and "\n" not in match.group(0):
            continue
        _add(pieces, separators, stripped[start : match.start()] + _closing(match.group(0)),
             _spacing(match.group(0)), max_chars)
        start = match.end()
    if stripped[start:]:
        _add(pieces, separators, stripped[start:], trailing, max_chars)
    elif separators:
        separators[-1] += trailing
    return Pieces(leading, pieces, separators)


def join_pieces(pieces: Pieces, translated: list[str]) -> str:
    """The translated text: each translated piece followed by its original separator."""
    body = "".join(t.strip() + sep for t, sep in zip(translated, pieces.separators, strict=True))
    return pieces.leading + body


def _ends_with_abbreviation(sentence: str) -> bool:
    last = sentence.rsplit(None, 1)[-1] if sentence.strip() else ""
    word = last.rstrip(".").casefold()
    return last.endswith(".") and (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


def _closing(boundary: str) -> str:
    """Closing quotes or brackets that belong to the sentence before a boundary."""
    return boundary[: len(boundary) - len(boundary.lstrip("\"'”’)]"))]


def _spacing(boundary: str) -> str:
    return boundary.lstrip("\"'”’)]")


def _add(pieces: list[str], separators: list[str], sentence: str, separator: str, max_chars: int) -> None:
    parts = _cut(sentence, max_chars)
    pieces.extend(parts)
    separators.extend([" "] * (len(parts) - 1) + [separator])


def _cut(sentence: str, max_chars: int) -> list[str]:
    """``sentence`` in parts of at most ``max_chars`` characters, cut at spaces where possible."""
    parts: list[str] = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", 0, max_chars + 1)
        cut = cut if cut > 0 else max_chars
        parts.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    return [*parts, sentence] if sentence else parts
