"""The edge: what sits between HTTP and the endpoint rules. API keys (``auth``, ``key_file``),
admission (``admission``), the request guard (``guard``), the HTTP middleware, error handlers and
OpenAPI (``http``), metrics and metering, the exposure checks of a deployment (``exposure``), and
the fair share across tenants (``fair_share``, its waiting line ``fair_queue``)."""
