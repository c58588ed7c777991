"""Role settings in layers: defaults < config file (TOML) < environment (TP_ROLE_KEY) < command-line flags.

Every flag of a role is also a key of its config file and an environment variable: tp-node's `--home-relay`
is `home_relay` in the file and TP_NODE_HOME_RELAY in the environment. Values from the file and the
environment go through the flag's own parser, so one check (and one error message naming the key, the value
and what is allowed) covers all three sources. Unknown keys and unknown TP_ROLE_* variables are errors: a
typo must never silently fall back to a default.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tp_crypto.errors import TokenPlaceError

CONFIG_DEST = "config"
# Destinations that are not settings: argparse's own, and command options such as `status --json`.
NOT_SETTINGS = frozenset({"help", CONFIG_DEST})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
ENV_LIST_SEPARATOR = ","


class ConfigError(TokenPlaceError):
    """A setting has a value that is not allowed; the message names where it came from."""


def env_name(role: str, key: str) -> str:
    return f"TP_{role.upper()}_{key.upper()}"


def add_config_argument(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        dest=CONFIG_DEST,
        help=f"TOML config file (default: ${env_name(role, CONFIG_DEST)}; none). "
        "Precedence: defaults < file < environment < flags",
    )


def settings(parser: argparse.ArgumentParser, exclude: Iterable[str] = ()) -> dict[str, argparse.Action]:
    """The parser's options that are settings, by key (the option's dest)."""
    skip = NOT_SETTINGS | set(exclude)
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in skip}


def flag_of(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def is_switch(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def is_list(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def resolve(
    parser: argparse.ArgumentParser,
    role: str,
    argv: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    check_required: bool = True,
) -> argparse.Namespace:
    """Parse `argv` and layer it over the environment, the config file and the defaults. The parser is
    used up: its defaults are replaced so that argparse reports only the flags actually given.

    Flag errors exit through argparse as before; file and environment errors raise ConfigError."""
    environ = os.environ if environ is None else environ
    actions = settings(parser, exclude)
    defaults = {key: _default(action) for key, action in actions.items()}
    required = [key for key, action in actions.items() if action.required]
    for action in parser._actions:
        if action.dest in actions or action.dest == CONFIG_DEST:
            if action.help:  # --help still shows the built-in default
                action.help = action.help.replace("%(default)s", str(action.default))
            action.default = argparse.SUPPRESS
            action.required = False
    given = vars(parser.parse_args(argv))
    config = given.pop(CONFIG_DEST, None) or _env_path(environ, role)
    values = {key: value for key, value in given.items() if key not in actions}  # command options
    values.update(defaults)
    if config is not None:
        values.update(load_file(config, actions))
    values.update(from_environment(environ, role, actions))
    values.update((key, value) for key, value in given.items() if key in actions)
    missing = [key for key in required if values.get(key) is None] if check_required else []
    if missing:
        action = actions[missing[0]]
        raise ConfigError(
            f"{flag_of(action)} is required: give the flag, set {env_name(role, missing[0])} "
            f"or put {missing[0]} in the config file"
        )
    return argparse.Namespace(**values, config=config)


def _default(action: argparse.Action) -> Any:
    if isinstance(action.default, str) and callable(action.type):
        return action.type(action.default)
    return action.default


def _env_path(environ: Mapping[str, str], role: str) -> Path | None:
    text = environ.get(env_name(role, CONFIG_DEST))
    return Path(text).expanduser() if text else None


def load_file(path: Path, actions: Mapping[str, argparse.Action]) -> dict[str, Any]:
    """The settings a TOML file gives; ConfigError for an unreadable file, an unknown key or a bad value."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.__class__.__name__}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(actions))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(actions))})"
        )
    return {
        key: file_value(actions[key], value, f"config file {path}: key {key!r}", path.parent)
        for key, value in data.items()
    }


def file_value(action: argparse.Action, value: Any, where: str, base: Path) -> Any:
    if is_switch(action):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a boolean (true or false)")
        return value
    if is_list(action):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: {value!r} is not a list of strings")
        return [_scalar(action, item, where, base) for item in items]
    return _scalar(action, value, where, base)


def from_environment(
    environ: Mapping[str, str], role: str, actions: Mapping[str, argparse.Action]
) -> dict[str, Any]:
    prefix = env_name(role, "")
    known = {env_name(role, key): key for key in actions} | {env_name(role, CONFIG_DEST): CONFIG_DEST}
    unknown = sorted(name for name in environ if name.startswith(prefix) and name not in known)
    if unknown:
        raise ConfigError(f"unknown environment variable(s) {', '.join(unknown)} for {role}")
    values = {}
    for name, key in known.items():
        if name in environ and key != CONFIG_DEST:
            values[key] = _env_value(actions[key], environ[name], f"environment {name}")
    return values


def _env_value(action: argparse.Action, text: str, where: str) -> Any:
    if is_switch(action):
        word = text.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"{where}: {text!r} is not a boolean (true/false, 1/0, yes/no, on/off)")
        return word in TRUE_WORDS
    if is_list(action):
        items = [item.strip() for item in text.split(ENV_LIST_SEPARATOR) if item.strip()]
        return [_scalar(action, item, where, Path.cwd()) for item in items]
    return _scalar(action, text, where, Path.cwd())


def _scalar(action: argparse.Action, value: Any, where: str, base: Path) -> Any:
    """One value through the flag's own parser; relative paths are relative to the file naming them."""
    textual = action.type is None or action.type is Path  # names and paths: numbers are a mistake
    if isinstance(value, bool) or not isinstance(value, str if textual else str | int | float):
        raise ConfigError(f"{where}: {value!r} is not {_expected(action)}")
    text = str(value)
    parse: Callable[[str], Any] = action.type if callable(action.type) else str
    try:
        parsed = parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {text!r} is not {_expected(action)}") from None
    if action.choices is not None and parsed not in action.choices:
        allowed = ", ".join(str(choice) for choice in action.choices)
        raise ConfigError(f"{where}: {text!r} is not one of {allowed}")
    if isinstance(parsed, Path):
        parsed = parsed.expanduser()
        return parsed if parsed.is_absolute() else base / parsed
    return parsed


def _expected(action: argparse.Action) -> str:
    expected = getattr(action.type, "expected", None)
    if isinstance(expected, str):
        return expected
    if action.type is int:
        return "an integer"
    if action.type is float:
        return "a number"
    if action.type is Path:
        return "a path (a string)"
    if action.metavar:
        return f"a string like {action.metavar}"
    return "a string"
