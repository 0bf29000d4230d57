"""Generation: ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/responses``: the protocol
models, the rules of each endpoint, the assembly of answers and chunks, the request budget, and the
router."""
