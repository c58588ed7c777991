"""Tool calls the way llama.cpp's server does them for any model ("generic" format), sans-IO.

With `tool_choice` "auto" (OpenAI's default when tools are given) the output is constrained by a grammar to
either plain text (anything not starting with `{`) or one JSON object `{"tool_calls": [{"name": N,
"arguments": {...}}, ...]}` whose calls each name one of the tools and whose arguments follow that tool's
`parameters` schema; with "required" only the JSON object is allowed. The tools and the format are described
to the model in a system message, and earlier turns (assistant tool calls, `tool` results) are rewritten into
plain roles every chat template renders. A random model still produces a well-formed call: the grammar, not
the model, makes the shape right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

TOOL_CALLS_PER_ANSWER_MAX = 8  # parallel calls in one answer (1 when parallel_tool_calls is false)
# Text: anything whose first character is not "{" (which would start a call).
TEXT_RULE = "text ::= [^{] [^\\x00]*"


def _call_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    parameters = function.get("parameters") or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
    }


def calls_schema(tools: Sequence[Mapping[str, Any]], parallel: bool) -> dict[str, Any]:
    calls = {
        "type": "array",
        "items": {"anyOf": [_call_schema(tool) for tool in tools]},
        "minItems": 1,
        "maxItems": TOOL_CALLS_PER_ANSWER_MAX if parallel else 1,
    }
    return {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"]}


def tool_grammar(tools: Sequence[Mapping[str, Any]], mode: str, parallel: bool) -> str:
    """GBNF for `mode` "required" (a call) or "auto" (a call or text)."""
    calls = json_schema_to_gbnf(json.dumps(calls_schema(tools, parallel)))
    if mode == "required":
        return str(calls)
    renamed = str(calls).replace("root ::=", "calls ::=", 1)
    return f"root ::= calls | text\n{TEXT_RULE}\n{renamed}"


def system_prompt(tools: Sequence[Mapping[str, Any]], mode: str, parallel: bool) -> str:
    described = [
        {
            key: tool["function"][key]
            for key in ("name", "description", "parameters")
            if key in tool["function"]
        }
        for tool in tools
    ]
    how = "To call tools, answer with only" if mode == "auto" else "Answer by calling tools, with only"
    many = "one or more calls" if parallel else "exactly one call"
    return (
        f"You can call these tools: {json.dumps(described)}\n{how} a JSON object "
        f'{{"tool_calls": [{{"name": <tool name>, "arguments": {{...}}}}]}} holding {many}. '
        'A tool\'s result comes back as {"tool_response": ...}.'
    )


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _plain(message: Mapping[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        response = {"tool_call_id": message.get("tool_call_id"), "content": message.get("content") or ""}
        return {"role": "user", "content": json.dumps({"tool_response": response})}
    calls = message.get("tool_calls")
    if message["role"] == "assistant" and calls:
        listed = [
            {"name": call["function"]["name"], "arguments": _arguments(call["function"]["arguments"])}
            for call in calls
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        content = (message.get("content") or "") + json.dumps({"tool_calls": listed})
        return {"role": "assistant", "content": content}
    return {key: value for key, value in message.items() if key in ("role", "content", "name")}


def plain_messages(messages: Sequence[Mapping[str, Any]], system: str | None = None) -> list[dict[str, Any]]:
    """The conversation in roles every template renders; `system` joins (or becomes) the system message."""
    plain = [_plain(message) for message in messages]
    if system is None:
        return plain
    if plain and plain[0]["role"] == "system":
        return [{"role": "system", "content": f"{plain[0]['content'] or ''}\n\n{system}"}, *plain[1:]]
    return [{"role": "system", "content": system}, *plain]


def parse_calls(text: str) -> list[tuple[str, str]] | None:
    """[(name, arguments as JSON)] when `text` is a whole call object; None for text or a cut-off call."""
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    calls = document.get("tool_calls") if isinstance(document, dict) else None
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        return None
    return [(str(call.get("name")), json.dumps(call.get("arguments"))) for call in calls]
