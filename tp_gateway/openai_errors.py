"""OpenAI-shaped API errors, and the translation of a GPU node's error documents into them.

An error message never quotes prompt or output text: validation messages name the field and the JSON type
that was wrong, never the value, and a node's message is cut short and stripped of control characters.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPE_BY_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
NODE_MESSAGE_CHARS_MAX = 200
# Node codes that mean the request itself is wrong: a 400, and no other node would answer it differently.
# (unknown_field / unsupported_kind stay 502 and fail over: the gateway checked the fields, so they mean a
# node of another version, and another node may well take the request.)
NODE_REQUEST_ERRORS = frozenset({"bad_request", "context_length_exceeded"})
SHOWN_ID_CHARS_MAX = 128
# Node error codes "invalid_<field>" name a request field; only these become the error's `param`.
NODE_FIELD_PARAMS = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "input",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
    }
)


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return ERROR_TYPE_BY_STATUS.get(status, "invalid_request_error")


class ApiError(Exception):
    """An error the gateway answers with: the HTTP status and OpenAI's error object.

    `retry_elsewhere` says that another node may well serve the same request (the gateway fails over
    before the first token is sent).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_elsewhere: bool = False,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # sent as a Retry-After header
        self.status = status
        self.message = message
        self.type = error_type(status)
        self.param = param
        self.code = code
        self.retry_elsewhere = retry_elsewhere

    def to_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, param={self.param!r}, code={self.code!r})"


def shown(text: str, chars_max: int) -> str:
    """Text safe to put into a message: printable characters only, cut at `chars_max`."""
    printable = "".join(char if char.isprintable() else "?" for char in text[:chars_max])
    return printable + ("..." if len(text) > chars_max else "")


# Errors the HTTP side raises itself.


def invalid_json() -> ApiError:
    return ApiError(
        400,
        "We could not parse the JSON body of your request: send a JSON object "
        "with the header Content-Type: application/json.",
    )


def body_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than this gateway accepts ({limit_bytes} bytes).",
        code="request_too_large",
    )


def invalid_api_key() -> ApiError:
    return ApiError(
        401,
        "Missing or incorrect API key: send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def model_not_found(model_id: str) -> ApiError:
    name = shown(model_id, SHOWN_ID_CHARS_MAX)
    return ApiError(
        404,
        f"The model '{name}' does not exist or no node serves it right now; GET /v1/models lists them.",
        param="model",
        code="model_not_found",
    )


def unknown_route(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({shown(method, 16)} {shown(path, SHOWN_ID_CHARS_MAX)}).")


def no_capacity() -> ApiError:
    return ApiError(
        503,
        "No node that serves this model can take the request right now; retry shortly.",
        code="overloaded",
    )


def network_cannot_serve(code: str, reason: str) -> ApiError:
    """A 503 that will not go away by retrying: `reason` (the gateway's own words) says what to do."""
    return ApiError(503, f"The token.place network cannot serve this request now: {reason}.", code=code)


def model_gone(model_id: str, retry_after_s: int | None) -> ApiError:
    """A model that nodes served recently and none serves now: try again later, not "does not exist"."""
    name = shown(model_id, SHOWN_ID_CHARS_MAX)
    return ApiError(
        503,
        f"No node serves the model '{name}' right now; retry later.",
        param="model",
        code="model_unavailable",
        retry_after_s=retry_after_s,
    )


def upstream_failure(reason: str) -> ApiError:
    """The overlay failed us (a circuit died, a node broke the protocol); `reason` is ours, not user text."""
    return ApiError(502, f"The token.place network failed this request: {reason}", code="upstream_error")


def malformed_chunk(what: str) -> ApiError:
    return upstream_failure(f"the node sent a malformed response ({what}).")


# Node error documents.


def _invalid_field(code: str, message: str) -> ApiError:
    field = code.removeprefix("invalid_")
    param = field if field in NODE_FIELD_PARAMS else None
    return ApiError(400, f"The node refused the request: {message}", param=param, code=code)


def node_error_to_api(code: str, message: str) -> ApiError:
    """The API error for a node's error document; code and message are cut short (nodes are untrusted)."""
    code = shown(code, 64)
    message = shown(message, NODE_MESSAGE_CHARS_MAX) or "no reason given."
    if code.startswith("invalid_") or code in NODE_REQUEST_ERRORS:
        return _invalid_field(code, message)
    if code in ("unknown_model", "model_not_found"):
        # The directory said the node serves this model; another node may really do so.
        return ApiError(
            404,
            f"The node does not serve this model: {message}",
            param="model",
            code="model_not_found",
            retry_elsewhere=True,
        )
    if code == "overloaded":
        return ApiError(429, f"The node is busy: {message}", code="overloaded", retry_elsewhere=True)
    if code == "content_policy_violation":
        # Deliberately no failover: retrying would show a refused prompt to more nodes.
        return ApiError(400, f"The node refused the request: {message}", code=code)
    return ApiError(
        502, f"The node failed this request ({code}): {message}", code="upstream_error", retry_elsewhere=True
    )


def node_error_document_to_api(error: object) -> ApiError:
    """`node_error_to_api` for the value of an error document's "error" key, whatever its shape."""
    fields = error if isinstance(error, dict) else {}
    code, message = fields.get("code"), fields.get("message")
    return node_error_to_api(
        code if isinstance(code, str) else "internal_error", message if isinstance(message, str) else ""
    )
