"""The HTTP layer of the ingress: one FastAPI router per endpoint family, and the app factory.

Each route is a few lines over a handle method of the ingress deployment
(:class:`deployments.ingress.MaasIngress`), which it finds in ``request.app.state.ingress``; every
route that uses a model goes through :func:`maas.edge.admission.admitted`. :func:`build_app`
builds the app of one ingress replica from its config: nothing is set after import.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from maas.config import IngressConfig
from maas.edge.auth import KeyAuth, SharedRateLimiter, install_auth_middleware
from maas.edge.guard import RequestLimits, install_request_guard
from maas.edge.http import install_error_handlers, install_metrics_middleware, truthful_openapi
from maas.edge.key_file import KeyStore
from maas.edge.metrics import MetricsRecorder
from maas.endpoints.batches import router as batches
from maas.endpoints.encoding import router as encoding
from maas.endpoints.feedback import router as feedback
from maas.endpoints.generation import router as generation
from maas.endpoints.messages import router as messages
from maas.endpoints.messages.errors import install_anthropic_errors
from maas.endpoints.responses import router as responses
from maas.endpoints.service import router as service
from maas.endpoints.tasks import router as tasks

ROUTERS = (service.router, generation.router, responses.router, messages.router, encoding.router, tasks.router,
           batches.router, feedback.router)


def build_app(ingress: Any, config: IngressConfig, shared_limits_app: str | None = None) -> FastAPI:
    """The ASGI app of an ingress replica serving ``ingress``'s handle methods.

    ``shared_limits_app``: the Serve application whose ingress replicas count each API key's
    limits together (one limiter actor); None counts them in this replica.
    """
    app = FastAPI(
        title="maas",
        description="NLP models as a service: generation, classification, embeddings, tokenization.",
        version="0.1.0",
    )
    key_auth = KeyAuth(KeyStore(config.api_keys_file) if config.api_keys_file else None)
    if key_auth.store is not None and shared_limits_app is not None:
        key_auth.shared = SharedRateLimiter(shared_limits_app)
    recorder = MetricsRecorder()
    app.state.ingress, app.state.key_auth, app.state.recorder = ingress, key_auth, recorder
    app.state.max_stream_s = config.max_stream_s  # streamed answers end past it (maas.edge.admission)
    install_error_handlers(app)
    truthful_openapi(app)  # the errors each route answers, in the OpenAPI schema
    install_auth_middleware(app, key_auth)
    install_request_guard(app, RequestLimits(config.max_body_bytes, config.request_timeout_s,
                                             max_upload_bytes=config.max_file_bytes))
    install_metrics_middleware(app, recorder)  # counts 401s, 413s and 429s too
    install_anthropic_errors(app)  # outermost: the Messages routes' errors, the edge's too, in Anthropic's body
    for router in ROUTERS:
        app.include_router(router)
    return app
