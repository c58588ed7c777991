"""docs/OPERATIONS.md stays true to the code: every flag it shows exists, every config key it sets is one."""

from __future__ import annotations

import re
from pathlib import Path

from tp_cli.config import settings
from tp_gateway import cli as gateway_cli
from tp_node import node_cli, relay_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"
SUBCOMMAND_FLAGS = {"--force", "--new-key", "--json", "--key", "--help"}


def code_lines() -> list[str]:
    blocks = re.findall(r"```(?:sh|toml)?\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def known_flags() -> dict[str, set[str]]:
    parsers = {"tp-relay": relay_cli.build_parser(), "tp-node": node_cli.build_parser()}
    return {
        name: {flag for action in parser._actions for flag in action.option_strings} | SUBCOMMAND_FLAGS
        for name, parser in parsers.items()
    }


def test_every_flag_shown_exists() -> None:
    flags = known_flags()
    checked = 0
    for line in code_lines():
        match = re.search(r"\b(tp-relay|tp-node)\b(.*)", line)
        if match is None:
            continue
        for flag in re.findall(r"(?<!\S)--[a-z-]+", match.group(2)):
            assert flag in flags[match.group(1)], f"{match.group(1)} has no {flag}: {line}"
            checked += 1
    assert checked >= 7


def test_every_config_key_shown_exists() -> None:
    keys = set()
    for parser in (relay_cli.build_parser(), node_cli.build_parser(), gateway_cli.build_parser()):
        keys |= set(settings(parser))
    shown = re.findall(r"`([a-z_]+) = ", DOC.read_text()) + re.findall(
        r"^([a-z_]+) = ", DOC.read_text(), re.M
    )
    assert shown
    assert set(shown) <= keys
