"""Inference request and response documents (docs/PROTOCOL.md section 6), sans-IO.

`parse_request` checks a request document field by field and returns a frozen InferenceRequest, or raises
EngineError with a code naming the bad field. The chunk helpers build the response documents, and
`coalesce` merges the pieces a fast engine produced while the consumer was busy into as few chunks as
possible (one stream message each).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tp_net.protocol.inference_contract import (
    EMBEDDING_INPUTS_MAX,
    FIELDS_BY_KIND,
    KINDS,
    MAX_TOKENS_LIMIT,
    MESSAGE_FIELDS,
    MESSAGES_MAX,
    MODEL_ID_CHARS_MAX,
    PAD_FIELD,
    ROLES,
    SAMPLING_RANGES,
    SEED_ABS_MAX,
    STOP_SEQUENCE_CHARS_MAX,
    STOP_SEQUENCES_MAX,
    TOOL_CHOICE_MODES,
    TOOL_NAME,
    TOOL_NAME_CHARS_MAX,
    TOOLS_MAX,
    EngineError,
    check_images,
    check_logit_bias,
    check_n,
    check_schema_size,
    check_top_logprobs,
    image_part,
    image_urls,
)

ERROR_FIELD_CHARS_MAX = 64


@dataclass(frozen=True)
class InferenceRequest:
    kind: str
    model: str | None
    messages: tuple[Mapping[str, Any], ...] = ()
    prompt: str = ""
    inputs: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Normalised to llama-cpp-python's form: None for text, else {"type": "json_object"[, "schema": {...}]}.
    response_format: Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = field(default=None)
    n: int = 1  # choices, each its own generation
    logprobs: int | None = None  # None: no log probabilities; k: each token's, with its k top alternatives
    logit_bias: Mapping[int, float] = field(default_factory=dict)  # token id -> bias added to its logit
    parallel_tool_calls: bool = True
    images: tuple[bytes, ...] = ()  # every image of the messages, in order (checked; they stay in messages)

    def texts(self) -> list[str]:
        """Every piece of text the requester wrote (moderation reads these; images are not text)."""
        texts = [text for m in self.messages for text in message_texts(m.get("content")) if text]
        return [*texts, *([self.prompt] if self.prompt else []), *self.inputs]

    def named_tool(self) -> str | None:
        if isinstance(self.tool_choice, Mapping):
            return str(self.tool_choice["function"]["name"])
        return None


def message_texts(content: object) -> list[str]:
    """The text of a message's content: itself, or its text parts."""
    if isinstance(content, list):
        return [part["text"] for part in content if part.get("type") == "text"]
    return [str(content)] if content else []


def _fail(code: str, message: str) -> EngineError:
    return EngineError(code, message)


def _number(document: Mapping[str, Any], name: str, default: float) -> float:
    value = document.get(name)
    if value is None:
        return default
    low, high = SAMPLING_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"invalid_{name}", f"{name} must be a number in {low:g}..{high:g}")
    return float(value)


def _max_tokens(document: Mapping[str, Any]) -> int | None:
    value = document.get("max_tokens")
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise _fail("invalid_max_tokens", f"max_tokens must be an integer in 1..{MAX_TOKENS_LIMIT}")
    return value


def _seed(document: Mapping[str, Any]) -> int | None:
    value = document.get("seed")
    if value is None:
        return None
    if type(value) is not int or not -SEED_ABS_MAX < value < SEED_ABS_MAX:
        raise _fail("invalid_seed", "seed must be an integer of at most 64 bits")
    return value


def _stop(document: Mapping[str, Any]) -> tuple[str, ...]:
    value = document.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    valid = isinstance(stops, list) and len(stops) <= STOP_SEQUENCES_MAX
    if not valid or not all(isinstance(s, str) and 1 <= len(s) <= STOP_SEQUENCE_CHARS_MAX for s in stops):
        raise _fail(
            "invalid_stop",
            f"stop must be a string or a list of up to {STOP_SEQUENCES_MAX} strings "
            f"of 1..{STOP_SEQUENCE_CHARS_MAX} characters",
        )
    return tuple(stops)


def _logprobs(document: Mapping[str, Any]) -> int | None:
    value = document.get("logprobs")
    return None if value is None else check_top_logprobs(value)


def _part(part: Any) -> dict[str, Any] | None:
    """A content part as the engines read it: text, or an image data URL (checked with the others)."""
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    image = part.get("image_url") if isinstance(part, dict) else None
    if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(image, dict):
        return image_part(image.get("url"))  # the URL is checked in parse_request (check_images)
    return None


def _content(value: Any, index: int) -> str | list[dict[str, Any]] | None:
    """A message's content: a string, null, or a list of parts: text parts joined into a string unless
    there is an image among them (then the list of text and image parts)."""
    if value is None or isinstance(value, str):
        return value
    parts = [_part(part) for part in value] if isinstance(value, list) else [None]
    if any(part is None for part in parts):
        raise _fail(
            "invalid_messages",
            f"messages[{index}].content must be a string, null or a list of text and image_url parts",
        )
    checked = [part for part in parts if part is not None]
    if all(part["type"] == "text" for part in checked):
        return "".join(part["text"] for part in checked)
    return checked


def _message(value: Any, index: int) -> dict[str, Any]:
    if not isinstance(value, dict) or not set(value) <= MESSAGE_FIELDS:
        raise _fail(
            "invalid_messages", f"messages[{index}] must be a map with fields {sorted(MESSAGE_FIELDS)}"
        )
    if value.get("role") not in ROLES:
        raise _fail("invalid_messages", f"messages[{index}].role must be one of {', '.join(ROLES)}")
    message = dict(value, content=_content(value.get("content"), index))
    if isinstance(message["content"], list) and message["role"] != "user":
        raise _fail("invalid_messages", f"messages[{index}]: only user messages may carry images")
    for name in ("name", "tool_call_id"):
        if name in message and not isinstance(message[name], str):
            raise _fail("invalid_messages", f"messages[{index}].{name} must be a string")
    if "tool_calls" in message and not (
        message["role"] == "assistant" and isinstance(message["tool_calls"], list)
    ):
        raise _fail(
            "invalid_messages", f"messages[{index}].tool_calls must be a list on an assistant message"
        )
    return message


def _messages(document: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    value = document.get("messages")
    if not isinstance(value, list) or not 1 <= len(value) <= MESSAGES_MAX:
        raise _fail("invalid_messages", f"messages must be a list of 1..{MESSAGES_MAX} messages")
    return tuple(_message(message, index) for index, message in enumerate(value))


def _tool(value: Any, index: int) -> dict[str, Any]:
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(function, dict):
        raise _fail("invalid_tools", f'tools[{index}] must be {{"type": "function", "function": {{...}}}}')
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise _fail(
            "invalid_tools", f"tools[{index}].function.name must be 1..{TOOL_NAME_CHARS_MAX} of [A-Za-z0-9_-]"
        )
    if not isinstance(function.get("parameters", {}), dict):
        raise _fail("invalid_tools", f"tools[{index}].function.parameters must be a JSON schema map")
    if not isinstance(function.get("description", ""), str):
        raise _fail("invalid_tools", f"tools[{index}].function.description must be a string")
    return value


def _tools(document: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    value = document.get("tools")
    if value is None:
        return ()
    if not isinstance(value, list) or not 1 <= len(value) <= TOOLS_MAX:
        raise _fail("invalid_tools", f"tools must be a list of 1..{TOOLS_MAX} tools")
    return tuple(_tool(tool, index) for index, tool in enumerate(value))


def _tool_choice(
    document: Mapping[str, Any], tools: Sequence[Mapping[str, Any]]
) -> str | dict[str, Any] | None:
    value = document.get("tool_choice")
    if value is None:
        return "auto" if tools else None  # OpenAI's default when tools are given
    if not tools:
        raise _fail("invalid_tool_choice", "tool_choice needs tools")
    if value in TOOL_CHOICE_MODES:
        return str(value)
    names = {tool["function"]["name"] for tool in tools}
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict) or value.get("type") != "function" or function.get("name") not in names:
        raise _fail(
            "invalid_tool_choice",
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": '
            "one of the tools}}",
        )
    return {"type": "function", "function": {"name": function["name"]}}


def _parallel_tool_calls(document: Mapping[str, Any]) -> bool:
    value = document.get("parallel_tool_calls", True)
    if not isinstance(value, bool):
        raise _fail("invalid_parallel_tool_calls", "parallel_tool_calls must be a boolean")
    return value


def _response_format(document: Mapping[str, Any]) -> dict[str, Any] | None:
    value = document.get("response_format")
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return None
    spec = value.get("json_schema") if isinstance(value, dict) else None
    checked: dict[str, Any] | None = None
    if kind == "json_object" and isinstance(value.get("schema", {}), dict):
        checked = {"type": "json_object", **({"schema": value["schema"]} if "schema" in value else {})}
    elif kind == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        checked = {"type": "json_object", "schema": spec["schema"]}
    if checked is None:
        raise _fail(
            "invalid_response_format",
            'response_format must be {"type": "text"}, {"type": "json_object"} or '
            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
        )
    check_schema_size(checked.get("schema"), "invalid_response_format")  # before a grammar is built from it
    return checked


def _prompt(document: Mapping[str, Any]) -> str:
    value = document.get("prompt")
    if not isinstance(value, str):
        raise _fail("invalid_prompt", "prompt must be a string")
    return value


def _inputs(document: Mapping[str, Any]) -> tuple[str, ...]:
    value = document.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= EMBEDDING_INPUTS_MAX:
        raise _fail("invalid_input", f"input must be a string or a list of 1..{EMBEDDING_INPUTS_MAX} strings")
    if not all(isinstance(text, str) and text for text in inputs):
        raise _fail("invalid_input", "every input must be a non-empty string")
    return tuple(inputs)


def _kind_and_model(document: Mapping[str, Any]) -> tuple[str, str | None]:
    kind = document.get("kind", "chat")
    if kind not in KINDS:
        raise _fail("invalid_kind", f"kind must be one of {', '.join(KINDS)}")
    model = document.get("model")
    if model is not None and not (isinstance(model, str) and 1 <= len(model) <= MODEL_ID_CHARS_MAX):
        raise _fail("invalid_model", f"model must be a string of 1..{MODEL_ID_CHARS_MAX} characters")
    unknown = sorted(set(document) - FIELDS_BY_KIND[kind])
    if unknown:
        name = str(unknown[0])[:ERROR_FIELD_CHARS_MAX]
        raise _fail("unknown_field", f"field {name!r} is not part of a {kind} request")
    if not isinstance(document.get(PAD_FIELD, ""), str):
        raise _fail("invalid_pad", "pad must be a string (its only use is its length)")
    return str(kind), model


def parse_request(document: Mapping[str, Any]) -> InferenceRequest:
    """The checked request; EngineError naming the first bad field."""
    kind, model = _kind_and_model(document)
    if kind == "embedding":
        return InferenceRequest(kind, model, inputs=_inputs(document))
    common: dict[str, Any] = {
        "max_tokens": _max_tokens(document),
        "temperature": _number(document, "temperature", 1.0),
        "top_p": _number(document, "top_p", 1.0),
        "stop": _stop(document),
        "seed": _seed(document),
        "presence_penalty": _number(document, "presence_penalty", 0.0),
        "frequency_penalty": _number(document, "frequency_penalty", 0.0),
        "n": check_n(document.get("n")),
        "logprobs": _logprobs(document),
        "logit_bias": check_logit_bias(document.get("logit_bias")),
    }
    if kind == "completion":
        return InferenceRequest(kind, model, prompt=_prompt(document), **common)
    tools = _tools(document)
    check_schema_size([tool["function"].get("parameters") for tool in tools], "invalid_tools")
    messages = _messages(document)
    return InferenceRequest(
        kind,
        model,
        messages=messages,
        images=tuple(check_images(image_urls({"messages": list(messages)}))),
        response_format=_response_format(document),
        tools=tools,
        tool_choice=_tool_choice(document, tools),
        parallel_tool_calls=_parallel_tool_calls(document),
        **common,
    )


# Response chunks.


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def final_chunk(finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"finish_reason": finish_reason, "usage": usage(prompt_tokens, completion_tokens)}


def for_choice(chunk: dict[str, Any], choice: int, n: int) -> dict[str, Any]:
    """A chunk of choice `choice`: marked `"choice": i` when the request asked for several (n > 1)."""
    return {**chunk, "choice": choice} if n > 1 else chunk


def logprob_entry(token: str, logprob: float, top: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """One output token's log probability and its most likely alternatives (OpenAI's chat shape)."""
    return {
        "token": token,
        "logprob": logprob,
        "top_logprobs": [{"token": text, "logprob": value} for text, value in top],
    }


def tool_call_start(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """The first delta of a tool call (OpenAI shape): id, type and name, then argument pieces follow."""
    call = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return {"tool_calls": [call]}


def tool_call_arguments(index: int, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def embedding_chunk(index: int, vector: Sequence[float]) -> dict[str, Any]:
    if not all(math.isfinite(x) for x in vector):
        raise EngineError("internal_error", "the model produced a non-finite embedding")
    return {"embedding": list(vector), "index": index}


def _merge(last: dict[str, Any], chunk: Mapping[str, Any]) -> bool:
    """Fold `chunk` into `last` when that loses nothing; True if it did."""
    keys = set(chunk) - {"choice"}
    if set(last) != set(chunk) or last.get("choice") != chunk.get("choice"):
        return False
    if keys in ({"text"}, {"text", "logprobs"}):
        last["text"] += chunk["text"]
        if "logprobs" in keys:
            last["logprobs"] = [*last["logprobs"], *chunk["logprobs"]]
        return True
    if keys == {"tool_calls"}:
        previous, call = last["tool_calls"][-1], chunk["tool_calls"][0]
        if (
            len(chunk["tool_calls"]) == 1
            and set(call) == {"index", "function"}
            and (call["index"] == previous["index"])
        ):
            previous["function"]["arguments"] += call["function"]["arguments"]
            return True
        last["tool_calls"].extend(_copy(chunk)["tool_calls"])
        return True
    return False


def coalesce(chunks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Merge consecutive text chunks and tool-call deltas; the concatenated meaning is unchanged."""
    merged: list[dict[str, Any]] = []
    for chunk in chunks:
        if not (merged and _merge(merged[-1], chunk)):
            merged.append(_copy(chunk))
    return merged


def _copy(chunk: Mapping[str, Any]) -> dict[str, Any]:
    if "tool_calls" in chunk:
        calls = [dict(call, function=dict(call["function"])) for call in chunk["tool_calls"]]
        return {**chunk, "tool_calls": calls}
    return dict(chunk)
