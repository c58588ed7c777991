"""Chat request fields (messages, tools, tool_choice, response_format), checked and normalised to the
node's document shapes: only the fields a node reads survive, so an SDK's echoed `refusal: null` or
`annotations: []` on an earlier assistant message does not trip the node's strict field check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tp_gateway.openai_fields import (
    array,
    invalid,
    json_value,
    mapping,
    missing,
    one_of,
    string,
    unsupported,
)
from tp_net.protocol.inference_contract import (
    MESSAGES_MAX,
    RESPONSE_FORMAT_TYPES,
    ROLES,
    TOOL_CHOICE_MODES,
    TOOL_NAME,
    TOOL_NAME_CHARS_MAX,
    TOOLS_MAX,
    EngineError,
    check_images,
    image_bytes,
    image_part,
    image_urls,
)

CONTENT_PARTS_MAX = 1024
TOOL_CALLS_MAX = 128
NAME_CHARS_MAX = 64
TOOL_NAME_RULE = f"expected 1 to {TOOL_NAME_CHARS_MAX} of the characters a-z, A-Z, 0-9, _ and -."
# Content part types OpenAI defines; any other type is reported without echoing it.
KNOWN_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
IMAGE_DETAILS = ("auto", "low", "high")


def _part(value: object, param: str, images_ok: bool) -> dict[str, Any]:
    """A content part in the node's shape: text, or (in a user message) an image as a data URL."""
    part = mapping(value, param)
    kind = part.get("type")
    if kind == "image_url" and images_ok:
        image = mapping(required_in(part, "image_url", param), f"{param}.image_url")
        url = string(required_in(image, "url", f"{param}.image_url"), f"{param}.image_url.url")
        if image.get("detail") is not None:  # llama.cpp's projector has one resolution: any detail is it
            one_of(image["detail"], f"{param}.image_url.detail", IMAGE_DETAILS)
        try:
            image_bytes(url)
        except EngineError as exc:
            raise invalid(f"{param}.image_url.url", f"{exc}.", "invalid_image") from None
        return image_part(url)
    if kind != "text":
        where = "in user messages, and " if kind == "image_url" else ""
        shown = f"'{kind}' parts are" if kind in KNOWN_PART_TYPES else "this part type is"
        raise unsupported(
            f"{param}.type",
            f"token.place models read text and images ({where}data URLs only); {shown} not supported.",
        )
    return {"type": "text", "text": string(required_in(part, "text", param), f"{param}.text")}


def required_in(fields: Mapping[str, Any], name: str, parent: str) -> Any:
    value = fields.get(name)
    if value is None:
        raise missing(f"{parent}.{name}")
    return value


def content(value: object, param: str, images_ok: bool = False) -> str | list[dict[str, Any]]:
    """A message's content: a string, or a list of parts: text parts joined as the node joins them, or the
    text and image parts of a user message with images."""
    if isinstance(value, list):
        listed = array(value, param, "an array of content parts", CONTENT_PARTS_MAX)
        parts = [_part(part, f"{param}[{index}]", images_ok) for index, part in enumerate(listed)]
        if all(part["type"] == "text" for part in parts):
            return "".join(part["text"] for part in parts)
        return parts
    return string(value, param)


def _tool_call(value: object, param: str) -> dict[str, Any]:
    call = mapping(value, param)
    if call.get("type", "function") != "function":
        raise unsupported(f"{param}.type", "only 'function' tool calls are supported.")
    function = mapping(required_in(call, "function", param), f"{param}.function")
    return {
        "id": string(required_in(call, "id", param), f"{param}.id"),
        "type": "function",
        "function": {
            "name": string(required_in(function, "name", f"{param}.function"), f"{param}.function.name"),
            "arguments": string(
                required_in(function, "arguments", f"{param}.function"), f"{param}.function.arguments"
            ),
        },
    }


def _assistant_fields(message: Mapping[str, Any], param: str) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if calls is None:
        if message.get("content") is None:
            raise missing(f"{param}.content")
        return {}
    calls = array(calls, f"{param}.tool_calls", "an array of tool calls", TOOL_CALLS_MAX)
    return {
        "tool_calls": [_tool_call(call, f"{param}.tool_calls[{index}]") for index, call in enumerate(calls)]
    }


def message(value: object, param: str) -> dict[str, Any]:
    fields = mapping(value, param)
    role = one_of(required_in(fields, "role", param), f"{param}.role", ROLES)
    if role != "assistant" and fields.get("content") is None:
        raise missing(f"{param}.content")
    raw_content = fields.get("content")
    checked: dict[str, Any] = {
        "role": role,
        "content": None if raw_content is None else content(raw_content, f"{param}.content", role == "user"),
    }
    if fields.get("name") is not None:
        checked["name"] = string(fields["name"], f"{param}.name", NAME_CHARS_MAX)
    if role == "assistant":
        checked.update(_assistant_fields(fields, param))
    if role == "tool":
        checked["tool_call_id"] = string(required_in(fields, "tool_call_id", param), f"{param}.tool_call_id")
    return checked


def messages(value: object) -> list[dict[str, Any]]:
    listed = array(value, "messages", "an array of messages", MESSAGES_MAX)
    checked = [message(item, f"messages[{index}]") for index, item in enumerate(listed)]
    try:
        check_images(image_urls({"messages": checked}))  # how many, how large in all
    except EngineError as exc:
        raise invalid("messages", f"{exc}.", "invalid_image") from None
    return checked


def _tool(value: object, param: str) -> dict[str, Any]:
    tool = mapping(value, param)
    if tool.get("type") != "function":
        raise unsupported(f"{param}.type", "only tools of type 'function' are supported.")
    function = mapping(required_in(tool, "function", param), f"{param}.function")
    name = string(required_in(function, "name", f"{param}.function"), f"{param}.function.name")
    if not TOOL_NAME.fullmatch(name):
        raise invalid(f"{param}.function.name", TOOL_NAME_RULE)
    checked: dict[str, Any] = {"name": name}
    if function.get("description") is not None:
        checked["description"] = string(function["description"], f"{param}.function.description")
    if function.get("parameters") is not None:
        parameters = mapping(function["parameters"], f"{param}.function.parameters")
        checked["parameters"] = json_value(parameters, f"{param}.function.parameters")
    return {"type": "function", "function": checked}


def tools(value: object) -> list[dict[str, Any]]:
    """The tools; an empty list means none (some clients always send one)."""
    if value is None or value == []:
        return []
    listed = array(value, "tools", "an array of tools", TOOLS_MAX)
    return [_tool(tool, f"tools[{index}]") for index, tool in enumerate(listed)]


def tool_choice(value: object, tool_list: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    if value is None or (value == "none" and not tool_list):
        return None
    if not tool_list:
        raise invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are specified.")
    if isinstance(value, str):
        return one_of(value, "tool_choice", TOOL_CHOICE_MODES)
    choice = mapping(value, "tool_choice")
    if choice.get("type") != "function":
        raise unsupported(
            "tool_choice.type", "expected 'function' (or the strings 'none', 'auto', 'required')."
        )
    function = mapping(required_in(choice, "function", "tool_choice"), "tool_choice.function")
    name = string(required_in(function, "name", "tool_choice.function"), "tool_choice.function.name")
    if name not in {tool["function"]["name"] for tool in tool_list}:
        raise invalid("tool_choice.function.name", "expected the name of one of the tools.")
    return {"type": "function", "function": {"name": name}}


def _json_schema_format(value: Mapping[str, Any]) -> dict[str, Any]:
    spec = mapping(required_in(value, "json_schema", "response_format"), "response_format.json_schema")
    name = string(
        required_in(spec, "name", "response_format.json_schema"), "response_format.json_schema.name"
    )
    if not TOOL_NAME.fullmatch(name):
        raise invalid("response_format.json_schema.name", TOOL_NAME_RULE)
    if spec.get("schema") is None:
        return {"type": "json_object"}  # no schema to follow: any JSON object will do
    schema = mapping(spec["schema"], "response_format.json_schema.schema")
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": json_value(schema, "response_format.json_schema.schema")},
    }


def response_format(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    fields = mapping(value, "response_format")
    kind = one_of(
        required_in(fields, "type", "response_format"), "response_format.type", RESPONSE_FORMAT_TYPES
    )
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    return _json_schema_format(fields)
