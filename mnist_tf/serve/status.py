"""The one error type of a refused request, whichever API it came by: TF Serving's status code and message.

TensorFlow's canonical status codes are gRPC's (the same names and numbers): the gRPC API answers
with the code itself, the REST API with the HTTP status TF Serving's http_server.cc maps it to.
"""

from __future__ import annotations

# TF's error codes (tf.errors.*.error_code, grpc.StatusCode) by number.
CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# Code -> HTTP status, as tensorflow_serving/model_servers/http_server.cc maps them.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class RequestError(Exception):
    """A request the server refuses: its status code (`INVALID_ARGUMENT`, ...), the message, and the HTTP status.

    The HTTP status is the code's unless given: the per-request limits answer REST with 400 or 413
    and gRPC with RESOURCE_EXHAUSTED.
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)

    def status_string(self) -> str:
        """As absl::Status::ToString() writes it inside another error."""
        return f"{self.code}: {self.message}"


def invalid(message: str) -> RequestError:
    return RequestError("INVALID_ARGUMENT", message)


def not_found(message: str) -> RequestError:
    return RequestError("NOT_FOUND", message)


def over_limit(message: str, http_status: int = 400) -> RequestError:
    """A request past one of the server's limits: RESOURCE_EXHAUSTED on gRPC, `http_status` on REST."""
    return RequestError("RESOURCE_EXHAUSTED", message, http_status)


def from_tf_code(error_code: int, message: str) -> RequestError:
    """A TensorFlow error (`tf.errors.OpError.error_code`) as a refused request."""
    return RequestError(CODES[error_code] if 0 < error_code < len(CODES) else "UNKNOWN", message)
