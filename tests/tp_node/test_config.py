"""Role settings: defaults < config file < environment < flags, and every kind of bad value is named."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tp_cli.config import ConfigError, resolve
from tp_node import node_cli, relay_cli

RELAY_ID = "ab" * 32
HOME = f"{RELAY_ID}@ws://127.0.0.1:7001/"


def relay(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    return resolve(relay_cli.build_parser(), "relay", argv, environ=env or {})


def node(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    return resolve(node_cli.build_parser(), "node", argv, environ=env or {})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def test_precedence_is_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = write(tmp_path, 'listen = "127.0.0.1:7100"\ncapacity = 200\nfamily = "pis"\n')
    assert relay([]).listen is None  # tp_node.relay_cli.listen_and_advertise picks the default
    from_file = relay(["--config", str(config)])
    assert (from_file.listen, from_file.capacity, from_file.family) == (("127.0.0.1", 7100), 200, "pis")
    env = {"TP_RELAY_LISTEN": "127.0.0.1:7200", "TP_RELAY_CAPACITY": "300"}
    from_env = relay(["--config", str(config)], env)
    assert (from_env.listen, from_env.capacity, from_env.family) == (("127.0.0.1", 7200), 300, "pis")
    from_flags = relay(["--config", str(config), "--listen", "127.0.0.1:7300"], env)
    assert (from_flags.listen, from_flags.capacity) == (("127.0.0.1", 7300), 300)


def test_the_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path, "authority = true\n")
    args = relay([], {"TP_RELAY_CONFIG": str(config)})
    assert args.authority is True
    assert args.config == config


def test_switches_lists_and_paths(tmp_path: Path) -> None:
    text = f'home_relay = ["{HOME}"]\nflash_attn = true\nbootstrap = "net/bootstrap.json"\n'
    config = tmp_path / "node.toml"
    config.write_text(text)
    args = node(["--config", str(config)])
    assert [relay.address for relay in args.home_relay] == ["ws://127.0.0.1:7001/"]
    assert args.flash_attn is True
    assert args.bootstrap == tmp_path / "net" / "bootstrap.json"  # relative to the file, not the cwd
    other = f"{'cd' * 32}@ws://127.0.0.1:7002/"
    from_env = node(
        ["--config", str(config)], {"TP_NODE_HOME_RELAY": f"{HOME},{other}", "TP_NODE_FLASH_ATTN": "no"}
    )
    assert len(from_env.home_relay) == 2
    assert from_env.flash_attn is False


def test_a_required_setting_may_come_from_any_layer() -> None:
    # No tp-node setting is required any more (home relays default to the directory's): a required one
    # added to its parser shows the rule.
    def with_region() -> argparse.ArgumentParser:
        parser = node_cli.build_parser()  # resolve uses a parser up
        parser.add_argument("--region", required=True)
        return parser

    with pytest.raises(ConfigError, match=r"--region is required.*TP_NODE_REGION.*region"):
        resolve(with_region(), "node", [], environ={})
    assert resolve(with_region(), "node", [], environ={"TP_NODE_REGION": "eu"}).region == "eu"
    assert node([]).home_relay is None  # chosen from the directory at start


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen = 7000", "key 'listen': '7000' is not HOST:PORT (port 0..65535)"),
        ('listen = "127.0.0.1:99999"', "key 'listen': '127.0.0.1:99999' is not HOST:PORT"),
        ("capacity = 0", "key 'capacity': '0' is not an integer in 1..10000000"),
        ('capacity = "lots"', "key 'capacity': 'lots' is not an integer in 1..10000000"),
        ("capacity = true", "key 'capacity': True is not an integer in 1..10000000"),
        ('admission = "closed"', "key 'admission': 'closed' is not one of open, invite"),
        ('authority = "yes"', "key 'authority': 'yes' is not a boolean (true or false)"),
        ('advertise = "http://x:1/"', "key 'advertise': address 'http://x:1/' is not a ws:// URL"),
        ('advertise = "ws://x:0/"', "key 'advertise': address 'ws://x:0/' needs a non-zero port"),
        ("data_dir = 5", "key 'data_dir': 5 is not a path (a string)"),
        ("family = 7", "key 'family': 7 is not a string"),
        ('log_level = "loud"', "key 'log_level': 'loud' is not one of debug, info, warning, error"),
        ('metrics = "localhost"', "key 'metrics': 'localhost' is not HOST:PORT"),
        ('release_key = ["beef"]', "key 'release_key': 'beef' is not a release public key (64 hex digits)"),
        ("release_key = 5", "key 'release_key': 5 is not a list of strings"),
        ("family = [1]", "key 'family': [1] is not a string"),
        ('lisen = "127.0.0.1:1"\nport = 1', "unknown key(s) lisen, port (known: "),
        ("listen = ", "is not valid TOML"),
    ],
)
def test_every_bad_file_value_names_the_key_the_value_and_what_is_allowed(
    tmp_path: Path, text: str, message: str
) -> None:
    config = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as error:
        relay(["--config", str(config)])
    assert f"config file {config}" in str(error.value)
    assert message in str(error.value)


def test_bad_node_values_are_checked_by_the_flags_own_parser(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    for text, message in [
        ('home_relay = ["relay"]', "key 'home_relay': 'relay' is not NODE_ID_HEX@ws://HOST:PORT/"),
        ("slots = 0", "key 'slots': '0' is not an integer in 1..64"),
        ('engine = "vllm"', "key 'engine': 'vllm' is not one of fake, llama"),
        ('fake_token_delay_ms = "soon"', "key 'fake_token_delay_ms': 'soon' is not a number"),
    ]:
        config.write_text(f'{text}\nhome_relay = ["{HOME}"]\n' if "home_relay" not in text else text + "\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            node(["--config", str(config)])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TP_RELAY_CAPACITY": "-5"}, "environment TP_RELAY_CAPACITY: '-5' is not an integer in 1..10000000"),
        ({"TP_RELAY_AUTHORITY": "maybe"}, "environment TP_RELAY_AUTHORITY: 'maybe' is not a boolean"),
        ({"TP_RELAY_LISEN": "127.0.0.1:1"}, "unknown environment variable(s) TP_RELAY_LISEN for relay"),
    ],
)
def test_bad_environment_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        relay([], env)
    assert message in str(error.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*gone.toml does not exist"):
        relay(["--config", str(tmp_path / "gone.toml")])


def test_the_command_line_reports_config_errors_like_flag_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "capacity = 0\n")
    with pytest.raises(SystemExit) as exited:
        relay_cli.main(["--config", str(config)])
    assert exited.value.code == 2
    assert "key 'capacity': '0' is not an integer in 1..10000000" in capsys.readouterr().err


def test_help_still_shows_the_built_in_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        node(["--help"])
    assert "model cache (default: " in capsys.readouterr().out
