"""Writing a role's commented config file: every setting with its help text, set ones uncommented."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tp_cli.config import env_name, flag_of

HEADER = """\
# token.place {role} configuration (TOML), written by `tp-{role} init`.
# Start with: tp-{role} --config {path}
# Precedence: built-in defaults < this file < environment (TP_{upper}_KEY) < command-line flags.
# Every key is also a flag (--key-name) and an environment variable; unknown keys are errors.
"""


# What a commented-out setting shows when it has no default: a value that is valid when uncommented.
EXAMPLES: dict[str, Any] = {
    "listen": "0.0.0.0:7000",
    "advertise": "ws://relay.example.org:7000/",
    "bootstrap": "/etc/token.place/bootstrap.json",
    "invitation": "/etc/token.place/invitation.token",
    "metrics": "127.0.0.1:9100",
    "home_relay": ["0" * 64 + "@ws://relay.example.org:7000/"],
    "model": "/var/lib/token.place/models/model.gguf",
    "model_id": "my-model",
    "n_ctx": 8192,
    "n_threads": 4,
    "chat_format": "chatml",
    "moderation_blocklist": "/etc/token.place/blocklist.txt",
    "moderation_plugin": "/etc/token.place/moderation.py",
    "api_key": "a-long-random-secret",
}


def example_value(key: str, action: argparse.Action) -> Any:
    """The default, else the example; [] for a list with neither."""
    if action.default is not None:
        return action.default
    return EXAMPLES.get(key, [] if isinstance(action, argparse._AppendAction) else None)


def toml_value(value: Any) -> str | None:
    """`value` as TOML, or None when it has no TOML form (then only the comment is written)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        value = f"{value[0]}:{value[1]}"  # a HOST:PORT setting
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # JSON string escapes are TOML basic-string escapes; TOML also forbids a raw DEL.
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        items = [toml_value(item) for item in value]
        if any(item is None for item in items):
            return None
        return "[" + ", ".join(item for item in items if item is not None) + "]"
    return None


def render_config(
    role: str, actions: Mapping[str, argparse.Action], values: Mapping[str, Any], path: Path
) -> str:
    """The file: a header, then per setting its help, flag and variable, and `key = value` (commented out
    with the default when `values` does not set it)."""
    lines = [HEADER.format(role=role, upper=role.upper(), path=path)]
    for key, action in actions.items():
        help_text = (action.help or "").replace("%(default)s", str(action.default))
        lines.append(f"# {help_text} [{flag_of(action)}, ${env_name(role, key)}]")
        if key in values:
            lines.append(f"{key} = {toml_value(values[key])}")
        else:
            default = toml_value(example_value(key, action))
            lines.append(f"# {key} = {default}" if default is not None else f"# {key} =")
        lines.append("")
    return "\n".join(lines)
