"""OpenAI request bodies -> checked calls carrying the node's inference request document.

`parse_chat`, `parse_completion` and `parse_embedding` take the parsed JSON body (any value) and raise
only ApiError(400) naming the bad field. Every limit is the inference contract's
(tp_net.protocol.inference_contract: one definition, enforced here and at the node), and `logit_bias` is
checked by the contract's own rule. Fields OpenAI defines that token.place cannot honour (audio, echo...) are
refused rather than silently dropped; the rest it does not need (user, metadata, store...) are type-checked
and dropped: `user` in particular never leaves the gateway.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from tp_gateway import openai_chat_fields as chat_fields
from tp_gateway.openai_fields import (
    INT_MAX,
    INT_MIN,
    array,
    body_object,
    boolean,
    ignored,
    integer,
    invalid,
    mapping,
    number,
    one_of,
    required,
    string,
    unsupported,
)
from tp_net.protocol.inference_contract import (
    CHOICES_MAX,
    EMBEDDING_INPUTS_MAX,
    MAX_TOKENS_LIMIT,
    MODEL_ID_CHARS_MAX,
    SAMPLING_RANGES,
    STOP_SEQUENCE_CHARS_MAX,
    STOP_SEQUENCES_MAX,
    TOP_LOGPROBS_MAX,
    EngineError,
    check_logit_bias,
    check_schema_size,
)

# OpenAI's legacy /completions default; chat has none (the node stops at end of text or context).
COMPLETION_MAX_TOKENS_DEFAULT = 16
ENCODING_FORMATS = ("float", "base64")
CHAT_IGNORED = {
    "user": "string",
    "metadata": "object",
    "store": "boolean",
    "service_tier": "string",
    "reasoning_effort": "string",
    "verbosity": "string",
    "prediction": "object",
    "safety_identifier": "string",
    "prompt_cache_key": "string",
}
OTHER_IGNORED = {"user": "string"}


@dataclass(frozen=True)
class ApiCall:
    model: str
    stream: bool
    include_usage: bool
    # Not in repr: it holds the prompt, and reprs end up in logs and tracebacks.
    node_document: Mapping[str, Any] = field(repr=False)

    def document(self) -> dict[str, Any]:
        """The node's request document (a fresh copy the caller may change)."""
        return copy.deepcopy(dict(self.node_document))

    @property
    def choices(self) -> int:
        return int(self.node_document.get("n", 1))

    @property
    def top_logprobs(self) -> int | None:
        """None: no log probabilities; k: each token's, with k alternatives."""
        value = self.node_document.get("logprobs")
        return None if value is None else int(value)


class ChatCall(ApiCall):
    pass


class CompletionCall(ApiCall):
    pass


@dataclass(frozen=True)
class EmbeddingCall(ApiCall):
    encoding_format: str = "float"
    input_count: int = 1


def _model(body: Mapping[str, Any]) -> str:
    return string(required(body, "model"), "model", MODEL_ID_CHARS_MAX, empty_ok=False)


def _streaming(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = body.get("stream") is not None and boolean(body["stream"], "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise invalid("stream_options", "'stream_options' is only allowed when 'stream' is true.")
    include = mapping(options, "stream_options").get("include_usage")
    return True, include is not None and boolean(include, "stream_options.include_usage")


T = TypeVar("T")


def _node_rule(rule: Callable[[object], T], value: object, param: str) -> T:
    """A field checked by the node's own rule; its refusal as the gateway's 400."""
    try:
        return rule(value)
    except EngineError as exc:
        raise invalid(param, f"{exc}.") from None


def _choices_and_bias(body: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if body.get("n") is not None and (n := integer(body["n"], "n", 1, CHOICES_MAX)) > 1:
        fields["n"] = n
    if body.get("logit_bias") is not None:
        bias = mapping(body["logit_bias"], "logit_bias")
        if _node_rule(check_logit_bias, bias, "logit_bias"):
            fields["logit_bias"] = {key: float(value) for key, value in bias.items()}
    return fields


def _top_logprobs(value: object, param: str) -> int:
    return integer(value, param, 0, TOP_LOGPROBS_MAX)


def _max_tokens(body: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    """The first of `names` that is set (max_completion_tokens supersedes max_tokens), each checked."""
    values = [integer(body[name], name, 1, MAX_TOKENS_LIMIT) for name in names if body.get(name) is not None]
    return values[0] if values else None


def _stop(value: object) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if stops == []:
        return []
    listed = array(stops, "stop", "a string or an array of strings", STOP_SEQUENCES_MAX)
    return [
        string(
            stop,
            "stop" if isinstance(value, str) else f"stop[{index}]",
            STOP_SEQUENCE_CHARS_MAX,
            empty_ok=False,
        )
        for index, stop in enumerate(listed)
    ]


def _generation(body: Mapping[str, Any], max_tokens: int | None) -> dict[str, Any]:
    """The sampling fields shared by chat and completions; only those set go to the node."""
    fields: dict[str, Any] = {"max_tokens": max_tokens, **_choices_and_bias(body)}
    for name, (low, high) in SAMPLING_RANGES.items():
        if body.get(name) is not None:
            fields[name] = number(body[name], name, low, high)
    if body.get("stop") is not None:
        fields["stop"] = _stop(body["stop"]) or None
    if body.get("seed") is not None:
        fields["seed"] = integer(body["seed"], "seed", INT_MIN, INT_MAX)
    return {name: value for name, value in fields.items() if value is not None}


def _chat_logprobs(body: Mapping[str, Any]) -> dict[str, Any]:
    """Chat's `logprobs` (a boolean) and `top_logprobs` -> the node's `logprobs` (alternatives per token)."""
    wanted = body.get("logprobs") is not None and boolean(body["logprobs"], "logprobs")
    top = body.get("top_logprobs")
    if top is None:
        return {"logprobs": 0} if wanted else {}
    top = _top_logprobs(top, "top_logprobs")
    if not wanted:
        raise invalid("top_logprobs", "'top_logprobs' is only allowed when 'logprobs' is true.")
    return {"logprobs": top}


def _parallel_tool_calls(body: Mapping[str, Any], tools: list[dict[str, Any]]) -> bool | None:
    """False when asked (at most one call per answer); None (the node's default: several) otherwise."""
    value = body.get("parallel_tool_calls")
    return False if value is not None and not boolean(value, "parallel_tool_calls") and tools else None


def _refuse_chat_extras(body: Mapping[str, Any]) -> None:
    for name in ("functions", "function_call"):
        if body.get(name) is not None:
            raise unsupported(name, "this deprecated field is not supported; use 'tools' and 'tool_choice'.")
    for name in ("audio", "web_search_options"):
        if body.get(name) is not None:
            raise unsupported(name, "token.place models produce text only and have no web search.")
    if body.get("modalities") is not None:
        modalities = array(body["modalities"], "modalities", "an array of strings", 4)
        for index, modality in enumerate(modalities):
            one_of(modality, f"modalities[{index}]", ("text",))


def parse_chat(body: object) -> ChatCall:
    fields = body_object(body)
    model = _model(fields)
    messages = chat_fields.messages(required(fields, "messages"))
    stream, include_usage = _streaming(fields)
    _refuse_chat_extras(fields)
    ignored(fields, CHAT_IGNORED)
    tools = chat_fields.tools(fields.get("tools"))
    schemas = [tool["function"].get("parameters") for tool in tools]
    _node_rule(partial(check_schema_size, code="invalid_tools"), schemas, "tools")
    response_format = chat_fields.response_format(fields.get("response_format"))
    schema = (response_format or {}).get("json_schema", {}).get("schema")
    _node_rule(partial(check_schema_size, code="invalid_response_format"), schema, "response_format")
    extras = {
        "tools": tools or None,
        "tool_choice": chat_fields.tool_choice(fields.get("tool_choice"), tools),
        "response_format": response_format,
        "parallel_tool_calls": _parallel_tool_calls(fields, tools),
    }
    document = {
        "kind": "chat",
        "model": model,
        "messages": messages,
        **_generation(fields, _max_tokens(fields, ("max_completion_tokens", "max_tokens"))),
        **_chat_logprobs(fields),
        **{name: value for name, value in extras.items() if value is not None},
    }
    return ChatCall(model, stream, include_usage, document)


def _prompt(value: object) -> str:
    if not isinstance(value, list):
        return string(value, "prompt")
    if value and not isinstance(value[0], str):
        raise unsupported("prompt", "token ids are not supported; send the prompt as text.")
    if len(value) > 1:
        raise unsupported(
            "prompt", "token.place answers one prompt per request; send one prompt per request."
        )
    return string(array(value, "prompt", "a string or an array of strings", 1)[0], "prompt[0]")


def _refuse_completion_extras(body: Mapping[str, Any]) -> None:
    if body.get("echo") is not None and boolean(body["echo"], "echo"):
        raise unsupported("echo", "token.place does not echo the prompt.")
    if body.get("suffix") is not None and string(body["suffix"], "suffix"):
        raise unsupported("suffix", "token.place does not support insertion with a suffix.")
    best_of = body.get("best_of")
    if best_of is not None and integer(best_of, "best_of", 1, INT_MAX) != (body.get("n") or 1):
        raise unsupported(
            "best_of", "token.place returns every choice it generates, so 'best_of' must equal 'n'."
        )


def parse_completion(body: object) -> CompletionCall:
    fields = body_object(body)
    model = _model(fields)
    prompt = _prompt(required(fields, "prompt"))
    stream, include_usage = _streaming(fields)
    _refuse_completion_extras(fields)
    ignored(fields, OTHER_IGNORED)
    max_tokens = _max_tokens(fields, ("max_tokens",)) or COMPLETION_MAX_TOKENS_DEFAULT
    document = {"kind": "completion", "model": model, "prompt": prompt, **_generation(fields, max_tokens)}
    if fields.get("logprobs") is not None:  # completions: an integer, the alternatives per token
        document["logprobs"] = _top_logprobs(fields["logprobs"], "logprobs")
    return CompletionCall(model, stream, include_usage, document)


def _input_text(value: object, param: str) -> str:
    if isinstance(value, int | list) and not isinstance(value, bool):
        raise unsupported(param, "token ids are not supported; send text.")
    return string(value, param, empty_ok=False)


def _inputs(value: object) -> list[str]:
    if not isinstance(value, list):
        return [_input_text(value, "input")]
    listed = array(value, "input", "a string or an array of strings", EMBEDDING_INPUTS_MAX)
    return [_input_text(text, f"input[{index}]") for index, text in enumerate(listed)]


def parse_embedding(body: object) -> EmbeddingCall:
    fields = body_object(body)
    model = _model(fields)
    inputs = _inputs(required(fields, "input"))
    encoding = fields.get("encoding_format")
    encoding_format = "float" if encoding is None else one_of(encoding, "encoding_format", ENCODING_FORMATS)
    if fields.get("dimensions") is not None:
        integer(fields["dimensions"], "dimensions", 1, MAX_TOKENS_LIMIT)
        raise unsupported("dimensions", "token.place returns each model's embeddings at their full size.")
    ignored(fields, OTHER_IGNORED)
    document = {"kind": "embedding", "model": model, "input": inputs}
    return EmbeddingCall(model, False, False, document, encoding_format, len(inputs))
