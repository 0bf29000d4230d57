"""Plain-Python helpers of the Serve deployments: calls into deployment handles that end with
their caller (``calls``), coalescing (``coalesce``), request batching inside ``@serve.batch``
(``request_batching``), the ingress's preparation pool (``preparation``) and its in-process
tokenizer (``local_tokenizer``), and the cache-aware routing of generator requests
(``prefix_affinity``: the choice; ``prefix_router``: Serve's request router around it)."""
