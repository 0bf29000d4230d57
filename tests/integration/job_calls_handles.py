"""A Ray job: a separate driver that connects to the running cluster and calls the app handle.

Usage: python job_calls_handles.py GCS_ADDRESS CLASSIFIER GENERATOR  (prints one JSON line)
"""

import json
import sys


def main(address: str, classifier: str, generator: str) -> None:
    import ray
    from ray import serve

    from maas.endpoints.encoding.protocol import ClassifyRequest, TokenizeRequest
    from maas.endpoints.tasks.protocol import TranslateRequest
    from maas.protocol.chat import ChatCompletionRequest

    ray.init(address=address, namespace="serve", log_to_driver=False)
    app = serve.get_app_handle("maas")
    classified = app.classify.remote(ClassifyRequest(model=classifier, input=["great!", "awful"])).result()
    chat = ChatCompletionRequest.model_validate({
        "model": generator, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0, "max_tokens": 16})
    chunks = [c.choices[0].delta.content or "" for c in
              app.options(stream=True).chat_stream.remote(chat) if c.choices]
    whole = app.chat.remote(chat).result()
    tokens = app.tokenize.remote(TokenizeRequest(model=generator, prompt="héllo 世界")).result()
    translated = app.translate.remote(TranslateRequest(input="Good morning, my friend.", source_language="en",
                                                       target_language="pt")).result()
    print(json.dumps({
        "classify": [d.model_dump() for d in classified.data],
        "streamed": "".join(chunks),
        "whole": whole.choices[0].message.content,
        "chunks": len(chunks),
        "tokens": tokens.tokens,
        "translation": {"engine": translated.engine, "output": translated.output},
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
