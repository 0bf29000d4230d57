"""The endpoint families, one folder each (as vLLM's ``entrypoints/openai/<endpoint>/``): its
protocol models (``protocol.py``), its rules (plain Python, no Ray, no HTTP: the ingress deployment
calls them and ``tests/unit`` tests them directly) and its FastAPI router (``router.py``, a few lines
per route over the ingress's handle methods). ``app.build_app`` composes the routers with the edge's
middleware into the ingress's app.

- ``generation``: chat, completions (``completions_echo``: echo and prompt logprobs), responses.
- ``encoding``: embeddings, classify, tokenize, detokenize, score, rerank.
- ``tasks``: the ``/v1/pipelines`` tasks.
- ``batches``: the Batch and Files APIs.
- ``service``: ``/v1/models``, health, metrics, the playground.

Function calling and structured output are below, in :mod:`maas.generation_rules`, because the
engines use them too.
"""
