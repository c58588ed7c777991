"""Field checks for OpenAI request bodies: each returns the checked value or raises ApiError(400).

`param` is the field's path in OpenAI's notation (`messages[0].content`). Messages say what was wrong and
what is allowed, naming the JSON type that was sent but never the value (it may be prompt text).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from tp_gateway.openai_errors import ApiError
from tp_net.protocol.document_scan import DOCUMENT_DEPTH_MAX

# msgpack carries the node document: integers must fit 64 bits and nesting must stay shallow.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
# A free-form JSON value (a tool's parameters, a response schema) sits at most this deep in the node's
# document (document -> tools -> a tool -> its function), whose whole depth the codec bounds.
JSON_VALUE_DOCUMENT_DEPTH = 4
JSON_DEPTH_MAX = DOCUMENT_DEPTH_MAX - JSON_VALUE_DOCUMENT_DEPTH - 1


# bool before int: a JSON boolean is a Python int too.
JSON_TYPE_NAMES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    ((list, tuple), "an array"),
    (dict, "an object"),
)


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages ("an array", "null")."""
    return next((name for kind, name in JSON_TYPE_NAMES if isinstance(value, kind)), "an unknown type")


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"Invalid '{param}': {message}", param=param, code=code)


def invalid_type(param: str, expected: str, value: object) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> ApiError:
    return ApiError(
        400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def unsupported(param: str, message: str) -> ApiError:
    return ApiError(400, f"Unsupported '{param}': {message}", param=param, code="unsupported_value")


def body_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(
            400,
            f"The request body must be a JSON object, but got {json_type(body)} instead.",
            code="invalid_type",
        )
    return body


def required(body: Mapping[str, Any], name: str) -> Any:
    """A required field; null counts as missing, as OpenAI treats it."""
    value = body.get(name)
    if value is None:
        raise missing(name)
    return value


def boolean(value: object, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_type(param, "a boolean", value)
    return value


def integer(value: object, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(param, "an integer", value)
    if value < low:
        raise invalid(
            param, f"integer below minimum value. Expected a value >= {low}.", "integer_below_min_value"
        )
    if value > high:
        raise invalid(
            param, f"integer above maximum value. Expected a value <= {high}.", "integer_above_max_value"
        )
    return value


def number(value: object, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(param, "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(param, f"expected a finite number from {low:g} to {high:g}.")
    if value < low:
        raise invalid(
            param, f"decimal below minimum value. Expected a value >= {low:g}.", "decimal_below_min_value"
        )
    if value > high:
        raise invalid(
            param, f"decimal above maximum value. Expected a value <= {high:g}.", "decimal_above_max_value"
        )
    return float(value)


def string(value: object, param: str, chars_max: int | None = None, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if not empty_ok and not value:
        raise invalid(param, "empty string. Expected a string with at least 1 character.", "empty_string")
    if chars_max is not None and len(value) > chars_max:
        raise invalid(
            param,
            f"string too long. Expected a string with at most {chars_max} characters.",
            "string_above_max_length",
        )
    if not value.isascii():
        _check_utf8(value, param)
    return value


def _check_utf8(value: str, param: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise invalid(param, "the string is not valid Unicode (it holds a lone surrogate).") from None


def array(value: object, param: str, expected: str, length_max: int) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_type(param, expected, value)
    if not value:
        raise invalid(param, f"empty array. Expected {expected} with at least 1 item.", "empty_array")
    if len(value) > length_max:
        raise invalid(
            param,
            f"array too long. Expected {expected} with at most {length_max} items.",
            "array_above_max_length",
        )
    return value


def mapping(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def one_of(value: object, param: str, allowed: Collection[str]) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if value not in allowed:
        listed = ", ".join(f"'{choice}'" for choice in allowed)
        raise invalid(param, f"unsupported value. Supported values are: {listed}.")
    return value


def json_value(value: object, param: str, depth: int = 0) -> Any:
    """A JSON value that msgpack can carry (a tool's parameters, a response schema), returned unchanged."""
    if depth > JSON_DEPTH_MAX:
        raise invalid(param, f"nested too deeply. Expected at most {JSON_DEPTH_MAX} levels.")
    if isinstance(value, dict):
        for key, item in value.items():
            string(key, param)
            json_value(item, param, depth + 1)
    elif isinstance(value, list):
        for item in value:
            json_value(item, param, depth + 1)
    elif isinstance(value, str):
        string(value, param)
    elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise invalid(param, "an integer in it does not fit 64 bits.")
    elif isinstance(value, float) and not math.isfinite(value):
        raise invalid(param, "NaN and infinities are not JSON.")
    elif not (value is None or isinstance(value, bool | int | float)):
        raise invalid_type(param, "JSON", value)
    return value


IGNORED_KINDS: dict[str, tuple[type, str]] = {
    "string": (str, "a string"),
    "boolean": (bool, "a boolean"),
    "integer": (int, "an integer"),
    "object": (dict, "an object"),
}


def ignored(body: Mapping[str, Any], kinds: Mapping[str, str]) -> None:
    """Fields the gateway accepts and ignores, still refused when their type is clearly wrong."""
    for name, kind in kinds.items():
        value = body.get(name)
        python_type, expected = IGNORED_KINDS[kind]
        wrong_bool = isinstance(value, bool) and python_type is not bool
        if value is not None and (wrong_bool or not isinstance(value, python_type)):
            raise invalid_type(name, expected, value)
