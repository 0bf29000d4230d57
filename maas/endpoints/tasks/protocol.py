"""Wire schemas of the classic NLP pipelines under ``/v1/pipelines/...``.

The pipelines (``maas/endpoints/tasks/rules.py``) are ``summarize``, ``translate``, ``entities``,
``analyze`` and ``moderated_chat``.

Same conventions as :mod:`maas.protocol.chat`: requests ignore unknown fields, responses are
OpenAI-style lists with ``id``, ``created``, ``model`` and ``usage``, and the same models are
the arguments and results of the application's handle methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from maas.protocol.base import (
    MAX_NAME_LENGTH,
    MAX_SEED,
    ModelName,
    NonEmptyInput,
    RequestModel,
    Texts,
    UsageInfo,
    WireModel,
    new_id,
    now,
)
from maas.protocol.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    FinishReason,
)
from maas.protocol.errors import InvalidRequestError

if TYPE_CHECKING:
    from maas.engines.ner import NerResult


# ----------------------------------------------------------------------------- entities


class EntitiesRequest(RequestModel):
    """``POST /v1/pipelines/entities``: named entities of one text or a list of texts."""

    model: ModelName | None = Field(None, description="NER model; default: the first served.")
    input: Annotated[str | Texts, NonEmptyInput] = Field(
        ..., description="One text or a list of texts (at most 256).")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EntitySpan(WireModel):
    """One entity; ``input[index][start_char:end_char] == text``."""

    text: str
    label: str = Field(description="Entity type, e.g. PERSON, ORG, GPE, MONEY, DATE.")
    start_char: int = Field(description="Offset of the first character, in Python characters.")
    end_char: int = Field(description="Offset just past the last character.")


class EntitiesData(WireModel):
    """The entities of the input at ``index``, in order of appearance."""

    index: int
    entities: list[EntitySpan]


class EntitiesResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("entities"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[EntitiesData]
    usage: UsageInfo = Field(description="prompt_tokens counts spaCy tokens.")


def entities_response(model: str, results: Sequence[NerResult]) -> EntitiesResponse:
    """The response for the NER deployment's results, one per input text."""
    data = [
        EntitiesData(index=i, entities=[EntitySpan(text=e.text, label=e.label, start_char=e.start_char,
                                                   end_char=e.end_char) for e in r.entities])
        for i, r in enumerate(results)
    ]
    return EntitiesResponse(model=model, data=data, usage=UsageInfo.of(sum(r.num_tokens for r in results)))


# ----------------------------------------------------------------------------- summarize, translate

LanguageName = str


class TextTaskFields(RequestModel):
    """Fields shared by the prompt-template pipelines (summarize, translate) over a generator."""

    model: ModelName | None = Field(None, description="Generator; default: the first served.")
    input: str = Field(..., min_length=1, max_length=100_000, description="The text to work on.")
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens to generate; default: derived from the task's size."
    )
    temperature: float = Field(0.0, ge=0, le=2, description="0 (the default) is greedy.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Sampling seed.")


class SummarizeRequest(TextTaskFields):
    """``POST /v1/pipelines/summarize``: a summary of one text in at most ``max_words`` words."""

    max_words: int = Field(50, ge=1, le=500, description="Longest summary, in words (longer is cut).")


class TranslateRequest(TextTaskFields):
    """``POST /v1/pipelines/translate``: one text from one language to another.

    ``model`` may name a translation model or a generator; by default the translator serves
    the pairs it has and the first generator the others.
    """

    source_language: LanguageName = Field(
        ..., min_length=1, max_length=40, pattern=r"^[^\r\n]+$", description="e.g. English, en, pt-BR."
    )
    target_language: LanguageName = Field(
        ..., min_length=1, max_length=40, pattern=r"^[^\r\n]+$", description="e.g. French."
    )

    @model_validator(mode="after")
    def _two_languages(self) -> TranslateRequest:
        if self.source_language.strip().casefold() == self.target_language.strip().casefold():
            raise ValueError("target_language must differ from source_language")
        return self


class TextTaskResponse(WireModel):
    """The generated text of a prompt-template pipeline."""

    id: str = Field(default_factory=lambda: new_id("pipeline"))
    created: int = Field(default_factory=now)
    model: str = Field(description="The generator that wrote `output`.")
    output: str = Field(description="The summary or translation, stripped.")
    finish_reason: FinishReason = Field(None, description="`length` when max_tokens cut it.")
    usage: UsageInfo


class SummarizeResponse(TextTaskResponse):
    object: Literal["pipeline.summary"] = "pipeline.summary"


class TranslateResponse(TextTaskResponse):
    object: Literal["pipeline.translation"] = "pipeline.translation"
    model: str = Field(description="The translation model or generator that wrote `output`.")
    engine: Literal["translator", "generator"] = Field(
        "generator", description="`translator`: a machine-translation model; `generator`: a prompt to a chat model."
    )
    pair: str | None = Field(None, description="The language pair the translator served, e.g. `en-pt`.")


# ----------------------------------------------------------------------------- analyze


class AnalyzeRequest(RequestModel):
    """``POST /v1/pipelines/analyze``: sentiment, topic, entities and a one-line summary of a text.

    Each ``*_model`` field: omitted → the default model, and that part is null if the default
    is not served; null → that part is skipped; a name → that model (404 if it is not served).
    """

    input: str = Field(..., min_length=1, max_length=100_000, description="The text to analyze.")
    sentiment_model: ModelName | None = Field("sentiment", description="Classifier for sentiment.")
    topic_model: ModelName | None = Field("topic", description="Classifier for the topic.")
    ner_model: ModelName | None = Field(None, description="NER pipeline; default: the first served.")
    summary_model: ModelName | None = Field(None, description="Generator; default: the first served.")
    summary_max_words: int = Field(25, ge=1, le=100, description="Longest summary, in words.")

    def chosen(self, field: str, default: str | None) -> str | None:
        """The model of one part: the explicit value (None: skip), else ``default``."""
        return getattr(self, field) if field in self.model_fields_set else default


class LabelPrediction(WireModel):
    """A classifier's answer for the text: the top label and every label's probability."""

    label: str
    probability: float = Field(description="Probability of `label`.")
    labels: list[str]
    probs: list[float] = Field(description="Probability of each label, in `labels` order.")


class AnalyzeLatency(WireModel):
    """Wall time of each part (ms; null when skipped) and of the whole request.

    The parts run concurrently, so ``total`` is about the slowest part, not their sum.
    """

    sentiment: float | None = None
    topic: float | None = None
    entities: float | None = None
    summary: float | None = None
    total: float

    def parts(self) -> dict[str, float]:
        """The parts that ran, with their times."""
        times = {"sentiment": self.sentiment, "topic": self.topic, "entities": self.entities,
                 "summary": self.summary}
        return {name: ms for name, ms in times.items() if ms is not None}


class AnalyzeResponse(WireModel):
    id: str = Field(default_factory=lambda: new_id("analysis"))
    object: Literal["pipeline.analysis"] = "pipeline.analysis"
    created: int = Field(default_factory=now)
    models: dict[str, str] = Field(description="The model id that computed each part that ran.")
    sentiment: LabelPrediction | None = None
    topic: LabelPrediction | None = None
    entities: list[EntitySpan] | None = None
    summary: str | None = Field(None, description="One line.")
    latency_ms: AnalyzeLatency
    usage: UsageInfo = Field(description="Sum over the parts, each counted in its model's own tokens.")


# ----------------------------------------------------------------------------- moderated chat

DEESCALATION_PROMPT = (
    "The user seems upset. Stay calm, kind and respectful. Acknowledge their feelings briefly, "
    "do not argue or blame, and help them constructively."
)
"""The system prompt put first when the user's last message reads as negative."""


class ModeratedChatRequest(ChatCompletionRequest):
    """``POST /v1/pipelines/moderated_chat``: a chat request plus the moderation settings.

    Every chat field works as in ``/v1/chat/completions`` (``stream`` included); ``model``
    defaults to the first served generator.
    """

    model: ModelName | None = Field(  # type: ignore[assignment] - optional here, unlike plain chat
        None, description="Generator; default: the first served."
    )
    moderation_model: ModelName = Field("sentiment", description="Classifier of the user's message.")
    negative_label: str = Field("negative", min_length=1, max_length=MAX_NAME_LENGTH,
                                description="The label that means negative.")
    negative_threshold: float = Field(
        0.5, ge=0, le=1, description="De-escalate when P(negative_label) is above this."
    )
    deescalation_prompt: str = Field(
        DEESCALATION_PROMPT, min_length=1, max_length=4000, description="The system prompt then put first."
    )

    def last_user_text(self) -> str:
        """The text of the last user message; a request without one is a 400."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        raise InvalidRequestError("messages must contain a user message to moderate.", "messages")

    def chat_request(self, model: str, system_prompt: str | None) -> ChatCompletionRequest:
        """The plain chat request to run: this one's chat fields, maybe behind a system prompt."""
        fields = {name: getattr(self, name) for name in ChatCompletionRequest.model_fields}
        messages = list(self.messages)
        if system_prompt is not None:
            messages.insert(0, ChatMessage(role="system", content=system_prompt))
        return ChatCompletionRequest(**{**fields, "model": model, "messages": messages})


class Moderation(WireModel):
    """Which route a moderated chat took, and why."""

    model: str = Field(description="The classifier that read the user's message.")
    label: str = Field(description="Its top label for the message.")
    negative_probability: float = Field(description="P(negative_label) for the message.")
    negative_threshold: float
    system_prompt_applied: bool = Field(description="True: the de-escalation prompt was put first.")

    def header(self) -> str:
        """The value of the ``x-maas-moderation`` HTTP header."""
        return (f"label={self.label}; negative_probability={self.negative_probability:.4f}; "
                f"system_prompt_applied={str(self.system_prompt_applied).lower()}")


class ModeratedChatResponse(ChatCompletionResponse):
    """A chat completion plus the moderation that shaped it."""

    moderation: Moderation


class ModeratedChatChunk(ChatCompletionChunk):
    """A streamed chunk; the first one of a moderated stream has ``choices: []`` and ``moderation``."""

    moderation: Moderation | None = None
