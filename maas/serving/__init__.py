"""Plain-Python helpers of the Serve deployments: calls into deployment handles that end with
their caller (``calls``), coalescing (``coalesce``), request batching inside ``@serve.batch``
(``request_batching``), the ingress's preparation pool (``preparation``) and its in-process
tokenizer (``local_tokenizer``)."""
