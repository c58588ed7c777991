"""Fuzzing the node's request checks (tp_node.inference.parse_request): any decrypted request document, or a
valid one with a field replaced by anything, is either a request or an EngineError with a documented code."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_net.protocol.inference_contract import FIELDS_BY_KIND, EngineError
from tp_node.inference import InferenceRequest, parse_request

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# docs/PROTOCOL.md 6.3: the codes a request check may give.
CODES = {f"invalid_{name}" for kind in FIELDS_BY_KIND.values() for name in kind} | {
    "unknown_field",
    "invalid_request",
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
VALID: dict[str, dict[str, Any]] = {
    "chat": {
        "kind": "chat",
        "model": "m",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "u"}]},
        ],
        "max_tokens": 4,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["x"],
        "seed": 3,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    },
    "completion": {"kind": "completion", "model": "m", "prompt": "p", "max_tokens": 4, "stop": "x"},
    "embedding": {"kind": "embedding", "model": "m", "input": ["a", "b"]},
}


def check(document: Any) -> None:
    try:
        assert isinstance(parse_request(document), InferenceRequest)
    except EngineError as exc:
        assert exc.code in CODES, exc.code


def test_the_valid_samples_are_accepted() -> None:
    for document in VALID.values():
        assert isinstance(parse_request(document), InferenceRequest)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted({n for f in FIELDS_BY_KIND.values() for n in f})), values))
def test_any_document_is_a_request_or_a_coded_error(document: dict[str, Any]) -> None:
    check(document)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_a_valid_request_with_a_field_replaced_is_a_request_or_a_coded_error(
    kind: str, data: st.DataObject
) -> None:
    document = dict(VALID[kind])
    name = data.draw(st.sampled_from(sorted(document)) | st.text(max_size=8))
    document[name] = data.draw(values)
    check(document)


@FUZZ
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls", "x"]), values), max_size=5
    )
)
def test_any_messages_are_a_request_or_a_coded_error(messages: list[dict[str, Any]]) -> None:
    check({**VALID["chat"], "messages": messages})
