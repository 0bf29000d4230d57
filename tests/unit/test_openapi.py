"""The OpenAPI schema says what the service answers: its errors, never 422, typed answers."""

from __future__ import annotations

from maas.config import IngressConfig
from maas.edge.http import ROUTE_ERRORS
from maas.endpoints.app import build_app
from maas.endpoints.messages.errors import MESSAGES_PATHS
from maas.protocol.base import MAX_SEED


def test_every_route_documents_its_errors_and_no_422() -> None:
    app = build_app(None, IngressConfig())

    schema = app.openapi()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            if method == "post":
                assert set(map(str, ROUTE_ERRORS)) - {"409"} <= set(responses), (method, path)
                error = responses["400"]["content"]["application/json"]["schema"]
                body = "AnthropicErrorResponse" if path in MESSAGES_PATHS else "ErrorResponse"
                assert error == {"$ref": f"#/components/schemas/{body}"}, path
            assert ("409" in responses) == ((method, path) == ("delete", "/v1/files/{file_id}")), (method, path)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_streaming_routes_declare_their_answer_and_the_seed_bound_is_exact() -> None:
    app = build_app(None, IngressConfig())

    schema = app.openapi()
    for path, model in (("/v1/chat/completions", "ChatCompletionResponse"),
                        ("/v1/completions", "CompletionResponse")):
        content = schema["paths"][path]["post"]["responses"]["200"]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert "text/event-stream" in content
    seed = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["seed"]["anyOf"][0]
    assert int(seed["maximum"]) == MAX_SEED  # the stated bound is the accepted one, exactly


def test_the_request_budget_and_the_stream_limit_are_announced() -> None:
    schema = build_app(None, IngressConfig()).openapi()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/tokenize"):
        responses = schema["paths"][path]["post"]["responses"]
        assert "request_too_large" in responses["400"]["description"], path
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert "stream_timeout" in schema["paths"][path]["post"]["responses"]["200"]["description"]
