"""What one request may cost: the ingress's per-request budget (``ingress.limits``); and what one
tenant may hold at once (``ingress.fair_share``, :class:`FairShareLimits`).

A request is refused with a 400 ``request_too_large`` before any engine work when what it asks
for is over one of these bounds, so that one request of one tenant cannot hold the engines (or
the ingress's memory) for minutes. The checks are in :mod:`maas.endpoints.generation.budget`; the token
bounds are checked right after the prompts are tokenized, the others before.

The defaults fit every ordinary request of a served model with the default context
(``max_model_len`` 2048, ``max_tokens_limit`` 1024) and refuse the amplifications: 64 prompts x
``n`` 8 x 1,024 tokens is 524,288 tokens of generation, eight times ``max_generated_tokens``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_TOOLS = 128
"""OpenAI's most ``tools`` of a chat request (the request schema's bound)."""


class RequestBudget(BaseModel):
    """The most work one request may ask for; over any bound, a 400 ``request_too_large``."""

    model_config = ConfigDict(extra="forbid")

    max_sequences: int = Field(
        128, ge=1,
        description="Sequences one generation request runs: prompts x `n` (a chat has one prompt). "
        "128 is two full batches of a generator (`max_num_seqs` 64) and allows 64 prompts x n 2 or "
        "16 x n 8.",
    )
    max_generated_tokens: int = Field(
        65_536, ge=1,
        description="Tokens one generation request may ask to generate: prompts x `n` x `max_tokens` "
        "(the default `max_tokens` when it is not sent). 65,536 allows 64 prompts at the default "
        "`max_tokens_limit` (1024), or 8 choices of 8,192 tokens.",
    )
    max_total_tokens: int = Field(
        262_144, ge=1,
        description="Prompt and generated tokens of all sequences of one request: the sum over "
        "prompts of `n` x (prompt tokens + `max_tokens`). 262,144 allows 64 prompts of 4,096 tokens, "
        "e.g. a batch of an evaluation harness scoring long prompts.",
    )
    max_logprob_entries: int = Field(
        300_000, ge=1,
        description="Log probabilities one answer may hold: for each choice, each position shown "
        "(generated tokens with `logprobs`; prompt tokens with `echo` and `logprobs`, and again with "
        "`prompt_logprobs`) x (1 + the alternatives asked for). About 10 MB of JSON; a 64-prompt "
        "scoring batch of 2,000-token prompts with `logprobs: 1` needs about 256,000.",
    )
    max_tools: int = Field(
        MAX_TOOLS, ge=0, le=MAX_TOOLS,
        description=f"Functions of one chat request (`tools`); the schema allows {MAX_TOOLS}.",
    )
    max_schema_chars: int = Field(
        65_536, ge=1,
        description="Characters of JSON schema one chat request may send to be compiled for "
        "structured output: every tool's `parameters` and `response_format`'s schema together.",
    )
    max_pattern_repeat: int = Field(
        256, ge=1,
        description="Counted repetitions of one `pattern` of the request's JSON schemas (tools' "
        "`parameters`, `response_format`): its `{m,n}` counts, nested ones multiplied. Structured "
        "decoding writes them out when it compiles the schema, in time that grows much faster than "
        "the count (maas/endpoints/generation/schema_cost.py); `maxLength`/`maxItems` bound a length cheaply.",
    )
    max_pattern_repeat_total: int = Field(
        4096, ge=1,
        description="Counted repetitions of all the `pattern`s of one request together (as in "
        "`max_pattern_repeat`): with it and `max_schema_chars`, one request's schemas compile in "
        "seconds, not minutes, in the ingress's preparation pool and in the generator.",
    )
    max_tokenize_chars: int = Field(
        262_144, ge=1,
        description="Characters of text one `/v1/tokenize` request may send (its `prompt`, or its "
        "messages' text): 128 times the default context's worth of text.",
    )


class FairShareLimits(BaseModel):
    """How much of the service one tenant (an API key; without keys, a client address) may hold at
    once, and how long its work over that waits before a 429 (:mod:`maas.edge.fair_share`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Apply the fair share; false: no per-tenant in-flight limits (one tenant may "
        "then fill every queue).",
    )
    max_in_flight_requests: int = Field(
        64, ge=1,
        description="Requests of one tenant in flight at once, across the ingress replicas (each "
        "replica counts its part: the limit divided by the replica count). A key's "
        "`max_in_flight_requests` in the key file overrides it.",
    )
    max_waiting_requests: int = Field(
        64, ge=0,
        description="Requests of one tenant that wait for one of its requests in flight to end (per "
        "ingress replica); one more is a 429 at once. With `max_in_flight_requests`, keep it below "
        "the ingress's `max_ongoing_requests` so that one tenant cannot fill a replica.",
    )
    max_wait_s: float = Field(
        10.0, ge=0,
        description="Seconds a request over its tenant's limit waits for a turn (a request in flight, "
        "or its first generated sequence) before it is refused with a 429 and `Retry-After`.",
    )
    sequence_share: float = Field(
        0.5, gt=0, le=1,
        description="Share of each generator's sequence slots (`max_num_seqs` x its replicas) that "
        "one tenant may hold at once; its other sequences (prompts x `n`) wait for its own to end. "
        "0.5 leaves half of a generator free for the others, whatever one tenant sends. A key's "
        "`max_in_flight_sequences` in the key file overrides it (a count per generator).",
    )
