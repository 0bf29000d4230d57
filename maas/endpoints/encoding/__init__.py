"""Encoding: ``/v1/embeddings``, ``/v1/classify``, ``/v1/tokenize``, ``/v1/detokenize``,
``/v1/score`` and ``/v1/rerank``: the protocol models, their rules and the router."""
