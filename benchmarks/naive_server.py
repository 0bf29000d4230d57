"""The tutorial-style baseline: FastAPI + uvicorn calling transformers once per request.

* ``POST /v1/completions``: ``model.generate`` for this one prompt (no batching across requests),
  in a thread, streamed as server-sent events through a ``TextIteratorStreamer`` when
  ``stream`` is true; OpenAI's completion shape with ``usage``.
* ``POST /v1/classify``: a transformers ``pipeline("text-classification")`` call per request.

::

    python -m benchmarks.naive_server --port P --generator DIR
    python -m benchmarks.naive_server --port P --classifier DIR
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from maas.offline import set_offline_env

set_offline_env()

import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    TextIteratorStreamer,
    pipeline,
)

app = FastAPI(title="naive")
STATE: dict[str, Any] = {}


class CompletionBody(BaseModel):
    model: str
    prompt: str
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stream: bool = False
    ignore_eos: bool = False


class ClassifyBody(BaseModel):
    model: str
    input: str | list[str]


class CountingStreamer(TextIteratorStreamer):
    """A text streamer that also counts the generated tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generated = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            self.generated += int(value.numel())
        super().put(value)


def generate_kwargs(body: CompletionBody, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``model.generate`` arguments of one request (sampling unless temperature is 0)."""
    kwargs: dict[str, Any] = {**inputs, "max_new_tokens": body.max_tokens,
                              "pad_token_id": STATE["tokenizer"].eos_token_id}
    if body.temperature > 0:
        kwargs.update(do_sample=True, temperature=body.temperature, top_p=body.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    if body.ignore_eos:
        kwargs["min_new_tokens"] = body.max_tokens
    return kwargs


def start_generation(body: CompletionBody) -> tuple[CountingStreamer, int]:
    """Start ``model.generate`` for one prompt in a thread; its streamer and prompt length."""
    tokenizer = STATE["tokenizer"]
    inputs = tokenizer(body.prompt, return_tensors="pt")
    streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = generate_kwargs(body, dict(inputs)) | {"streamer": streamer}
    threading.Thread(target=STATE["model"].generate, kwargs=kwargs, daemon=True).start()
    return streamer, int(inputs["input_ids"].shape[1])


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(body: CompletionBody, text: str, finish: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"id": extra["id"], "object": "text_completion", "created": extra["created"],
            "model": body.model, "choices": [{"index": 0, "text": text, "finish_reason": finish}],
            **({"usage": extra["usage"]} if "usage" in extra else {})}


def sse_stream(body: CompletionBody, streamer: CountingStreamer, prompt_tokens: int) -> Iterator[str]:
    """Server-sent events: one chunk per text piece, a finish chunk, a usage chunk, ``[DONE]``."""
    meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time())}
    for text in streamer:
        if text:
            yield f"data: {json.dumps(completion(body, text, None, meta))}\n\n"
    finish = "length" if streamer.generated >= body.max_tokens else "stop"
    yield f"data: {json.dumps(completion(body, '', finish, meta))}\n\n"
    final = {"id": meta["id"], "object": "text_completion", "created": meta["created"],
             "model": body.model, "choices": [], "usage": usage(prompt_tokens, streamer.generated)}
    yield f"data: {json.dumps(final)}\n\n"
    yield "data: [DONE]\n\n"


@app.post("/v1/completions")
def completions(body: CompletionBody) -> Any:
    streamer, prompt_tokens = start_generation(body)
    if body.stream:
        return StreamingResponse(sse_stream(body, streamer, prompt_tokens), media_type="text/event-stream")
    text = "".join(streamer)
    finish = "length" if streamer.generated >= body.max_tokens else "stop"
    meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "usage": usage(prompt_tokens, streamer.generated)}
    return completion(body, text, finish, meta)


@app.post("/v1/classify")
def classify(body: ClassifyBody) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    results = STATE["classifier"](texts, top_k=None)
    data = [{"index": i, "label": max(r, key=lambda x: x["score"])["label"],
             "probs": {x["label"]: x["score"] for x in r}} for i, r in enumerate(results)]
    return {"object": "list", "model": body.model, "data": data}


@app.get("/v1/models")
def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model"} for name in STATE["names"]]}


def load(args: argparse.Namespace) -> None:
    """Load the model(s) once at start-up, as a tutorial server does."""
    STATE["names"] = [args.served_model_name]
    if args.generator:
        STATE["tokenizer"] = AutoTokenizer.from_pretrained(args.generator)
        STATE["model"] = AutoModelForCausalLM.from_pretrained(
            args.generator, dtype=getattr(torch, args.dtype)).eval()
    if args.classifier:
        STATE["classifier"] = pipeline("text-classification", model=args.classifier, device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--generator", default=None, help="causal LM folder")
    parser.add_argument("--classifier", default=None, help="sequence classification folder")
    parser.add_argument("--dtype", default="float32", choices=("bfloat16", "float32"),
                        help="generator weights dtype")
    parser.add_argument("--served-model-name", default="model")
    args = parser.parse_args(argv)
    load(args)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
