"""`tp-relay init` / `tp-node init`: create the identity key and a commented config file.

Every flag of the role may be given to init; its value is checked exactly as the role would check it, then
written into the file. Paths are written absolute (the role reads relative paths relative to the file).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tp_cli.config import ConfigError, file_value, flag_of, is_list, is_switch, resolve, settings
from tp_cli.config_file import render_config
from tp_cli.launch import IDENTITY_FILE, default_data_dir
from tp_crypto.identity import Identity, create_key_file, load_key_file
from tp_node.models import model_argument

CONFIG_FILE_MODE = 0o600  # a gateway's file may hold its API key


def init_main(role: str, build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]) -> int:
    actions = settings(build_parser())
    parser = _init_parser(role, actions)
    args = parser.parse_args(argv)
    config: Path = args.config.expanduser().absolute()
    if config.exists() and args.new_key and not args.force:
        return _rotate_key(role, build_parser, config)
    given = {key: _absolute(actions[key], getattr(args, key)) for key in actions}
    values = {key: value for key, value in given.items() if value is not None}
    values.setdefault("data_dir", str(default_data_dir(role)))
    try:
        text = _checked_text(role, actions, values, config)
        _refuse_overwrite(config, force=args.force)
    except ConfigError as exc:
        parser.error(str(exc))
    data_dir = Path(values["data_dir"])
    identity, how = _identity(data_dir, new_key=args.new_key)
    config.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CONFIG_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"identity key: {data_dir / IDENTITY_FILE} ({how})")
    print(f"node id: {identity.node_id.hex()}")
    print(f"config file: {config}")
    print(f"start with: tp-{role} --config {config}")
    return 0


def _rotate_key(role: str, build_parser: Callable[[], argparse.ArgumentParser], config: Path) -> int:
    """A new identity for the data directory the existing config file names; the file stays as it is."""
    parser = build_parser()
    try:
        settings_now = resolve(parser, role, ["--config", str(config)], check_required=False)
    except ConfigError as exc:
        parser.error(str(exc))
    identity, how = _identity(settings_now.data_dir, new_key=True)
    print(f"identity key: {settings_now.data_dir / IDENTITY_FILE} ({how})")
    print(f"node id: {identity.node_id.hex()}")
    print(f"config file: {config} (unchanged); restart tp-{role} to use the new key")
    return 0


def _init_parser(role: str, actions: Mapping[str, argparse.Action]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"tp-{role} init",
        description=f"Create the {role}'s identity key (kept if it exists) and a commented config file. "
        "Settings given here are checked and written into the file.",
    )
    parser.add_argument(
        "--config", type=Path, default=Path(f"{role}.toml"), help="file to write (%(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing config file")
    parser.add_argument(
        "--new-key",
        action="store_true",
        help="replace the identity key (a new node id; the old one is kept as identity.key.old-TIME); "
        "with an existing config file and no --force, only the key changes",
    )
    group = parser.add_argument_group("settings to write into the file")
    for key, action in actions.items():
        options: dict[str, Any] = {"dest": key, "help": action.help, "default": None}
        if is_switch(action):
            options.update(action="store_const", const=not isinstance(action, argparse._StoreFalseAction))
        else:
            options.update(action="append" if is_list(action) else "store", metavar=action.metavar)
            options["choices"] = action.choices
        group.add_argument(*action.option_strings, **options)
    return parser


def _absolute(action: argparse.Action, value: Any) -> Any:
    if action.type is Path and isinstance(value, str):
        return str(Path(value).expanduser().absolute())
    if action.dest == "model" and isinstance(value, str):
        return model_argument(value)
    return value


def _checked_text(
    role: str, actions: Mapping[str, argparse.Action], values: dict[str, Any], path: Path
) -> str:
    """Numbers are written as TOML numbers; the rendered file is then read back exactly as the role will."""
    for key, value in values.items():
        if isinstance(value, str):
            parsed = file_value(actions[key], value, flag_of(actions[key]), path.parent)
            if isinstance(parsed, int | float) and not isinstance(parsed, bool):
                values[key] = parsed
    text = render_config(role, actions, values, path)
    for key, value in tomllib.loads(text).items():
        file_value(actions[key], value, flag_of(actions[key]), path.parent)
    return text


def _refuse_overwrite(config: Path, *, force: bool) -> None:
    if config.exists() and not force:
        raise ConfigError(f"config file {config} already exists (use --force to overwrite it)")


def _identity(data_dir: Path, *, new_key: bool) -> tuple[Identity, str]:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = data_dir / IDENTITY_FILE
    if key_file.exists() and new_key:
        old = _backup_name(key_file)
        key_file.rename(old)
        return create_key_file(key_file), f"new; the previous key is now {old.name}"
    if key_file.exists():
        return load_key_file(key_file), "kept the existing key"
    return create_key_file(key_file), "created"


def _backup_name(key_file: Path) -> Path:
    """identity.key.old-TIME, with a counter when two rotations fall in one second."""
    stem = f"{key_file.name}.old-{time.strftime('%Y%m%dT%H%M%S')}"
    for attempt in itertools.count():
        candidate = key_file.with_name(f"{stem}-{attempt}" if attempt else stem)
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover
