"""One error hierarchy for the whole service.

Every error carries its own HTTP status and OpenAI error ``type``/``code``; the
ingress turns any exception into the OpenAI error body with :func:`error_body`.
Errors cross Ray process boundaries, so each one pickles (``__reduce__``).
"""

from __future__ import annotations

import math
import traceback
from http import HTTPStatus
from typing import Any


class MaasError(Exception):
    """Base class: an error that is safe to show to the client."""

    status_code: int = HTTPStatus.INTERNAL_SERVER_ERROR
    error_type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.param, self.code))


class InvalidRequestError(MaasError):
    """The request is malformed or a parameter is out of range (400)."""

    status_code = HTTPStatus.BAD_REQUEST
    error_type = "invalid_request_error"
    code = "invalid_value"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt (plus the requested output) does not fit the model's context."""

    code = "context_length_exceeded"


class RequestTooLargeError(InvalidRequestError):
    """The request asks for more work than one request may (``ingress.limits``): too many
    sequences, tokens, log probabilities, tools or schema (400)."""

    code = "request_too_large"


class ModelNotFoundError(MaasError):
    """The request names a model that no deployment serves (404)."""

    status_code = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"
    code = "model_not_found"

    @classmethod
    def for_model(cls, model: str, capability: str, available: list[str]) -> ModelNotFoundError:
        names = ", ".join(sorted(available)) or "none"
        return cls(
            f"The model '{model}' does not exist or does not support {capability}. "
            f"Available: {names}.",
            param="model",
        )


class NotFoundError(MaasError):
    """The route does not exist (404)."""

    status_code = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(MaasError):
    """The route exists but not for this HTTP method (405)."""

    status_code = HTTPStatus.METHOD_NOT_ALLOWED
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(MaasError):
    """The request body is over the configured size limit (413)."""

    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    error_type = "invalid_request_error"
    code = "payload_too_large"


class ConflictError(MaasError):
    """The request conflicts with the state of an object, e.g. deleting the input file of a batch
    that still runs (409)."""

    status_code = HTTPStatus.CONFLICT
    error_type = "invalid_request_error"
    code = "conflict"


class UnsupportedMediaTypeError(MaasError):
    """The request body is not declared as JSON (415)."""

    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    error_type = "invalid_request_error"
    code = "unsupported_media_type"


class RequestTimeoutError(MaasError):
    """The request did not get an answer within the service's deadline (504)."""

    status_code = HTTPStatus.GATEWAY_TIMEOUT
    error_type = "timeout"
    code = "request_timeout"


class StreamTimeoutError(RequestTimeoutError):
    """A stream ran past ``ingress.max_stream_s``: it ends with this error as its last event."""

    code = "stream_timeout"


class ServiceUnavailableError(MaasError):
    """A deployment is overloaded, starting or unhealthy (503)."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    error_type = "service_unavailable"
    code = "service_unavailable"


class ModelNotReadyError(ServiceUnavailableError):
    """A configured model has no live version yet: it is being trained, or its training failed
    (503, ``Retry-After``: the expected wait, at least a few seconds)."""

    code = "model_not_ready"

    def __init__(self, message: str, param: str | None = "model", code: str | None = None,
                 retry_after_s: float = 30.0) -> None:
        super().__init__(message, param, code)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.param, self.code, self.retry_after_s))


class ColdStartTimeoutError(ModelNotReadyError):
    """A deployment scaled to zero did not start a replica within its ``cold_start_timeout_s``
    (503, ``Retry-After``: the rest of the expected start); the replica keeps starting."""

    code = "cold_start_timeout"


class AuthenticationError(MaasError):
    """No API key, an unknown one or a revoked one (401)."""

    status_code = HTTPStatus.UNAUTHORIZED
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(MaasError):
    """The API key may not use the requested model (403)."""

    status_code = HTTPStatus.FORBIDDEN
    error_type = "invalid_request_error"
    code = "model_not_allowed"


class RateLimitError(MaasError):
    """The API key is over its requests or tokens per minute (429).

    ``error_type`` is OpenAI's name of the limit hit, ``"requests"`` or ``"tokens"``;
    ``retry_after_s`` is the exact wait until the request would be admitted.
    """

    status_code = HTTPStatus.TOO_MANY_REQUESTS
    error_type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 retry_after_s: float = 1.0, error_type: str = "requests") -> None:
        super().__init__(message, param, code)
        self.retry_after_s = retry_after_s
        self.error_type = error_type

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.param, self.code, self.retry_after_s, self.error_type))


class EngineError(MaasError):
    """The engine failed while serving a valid request (500)."""

    status_code = HTTPStatus.INTERNAL_SERVER_ERROR
    error_type = "internal_error"
    code = "engine_error"


INTERNAL_ERROR_MESSAGE = "The server had an error while processing the request."


def unwrap(exc: BaseException) -> BaseException:
    """Return the original error inside Ray's wrapper errors (``RayTaskError`` and kin)."""
    for _ in range(8):
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or cause is exc:
            return exc
        exc = cause
    return exc


def as_maas_error(exc: BaseException) -> MaasError:
    """Map any exception to a :class:`MaasError`; unknown errors hide their details."""
    exc = unwrap(exc)
    if isinstance(exc, MaasError):
        return exc
    if _is_ray_unavailable(exc):
        return ServiceUnavailableError("The service is overloaded or restarting; retry shortly.")
    return EngineError(INTERNAL_ERROR_MESSAGE)


def _is_ray_unavailable(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"BackPressureError", "ActorDiedError", "ActorUnavailableError",
                         "RayActorError", "DeploymentUnavailableError", "TimeoutError"})


def error_body(error: MaasError) -> dict[str, Any]:
    """The OpenAI error body ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


class ClientErrorLogFilter:
    """A ``logging`` filter for Ray Serve's replica logger: a request that failed with a
    client's mistake (a :class:`MaasError` below 500, e.g. a 400 or a 404) is logged as one
    line, not with Serve's full traceback ("Request failed." + stack); other failures keep
    their stack (:func:`failure_text`).

    No client text is logged: the one line holds the status, code and parameter, never the
    message, which may quote what the client sent (a model name, a line of a batch file); a
    failure's exception is logged by its type, not its message (a pydantic error quotes its input)."""

    def filter(self, record: Any) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        error = unwrap(exc) if exc is not None else None
        if isinstance(error, MaasError) and error.status_code < 500:
            record.msg, record.args = "Request refused: %s %s (param %s)", (
                int(error.status_code), error.code, loggable_param(error.param))
            record.exc_info, record.exc_text = None, None
        elif exc is not None:
            record.exc_info, record.exc_text = None, failure_text(exc)
        return True


def failure_text(exc: BaseException) -> str:
    """An exception for a log line: its stack and its type (the original one inside Ray's
    wrappers), not its message, which may quote the request."""
    error = unwrap(exc)
    stack = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{stack}{type(error).__module__}.{type(error).__qualname__}"


def loggable_param(param: str | None) -> str | None:
    """A parameter's name for a log line: a validation error's path may hold a client's dict
    key (``metadata.<key>``), so only its first part, a field name of the schema, is kept."""
    return None if param is None else param.split(".")[0].split("[")[0][:64]


def log_client_errors_as_one_line(logger_name: str = "ray.serve") -> None:
    """Install :class:`ClientErrorLogFilter` once on the replica logger (call it in a replica)."""
    import logging

    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())
