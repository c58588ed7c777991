"""`tp-relay init` / `tp-node init`: an identity key and a commented config file the role reads back."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from tp_cli.config import resolve
from tp_crypto.identity import load_key_file
from tp_node import node_cli, relay_cli

HOME = f"{'ab' * 32}@ws://127.0.0.1:7001/"


def test_relay_init_writes_a_key_and_a_config_the_relay_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "relay.toml"
    argv = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "--listen", "0.0.0.0:7000"]
    assert relay_cli.main(["init", *argv, "--capacity", "250", "--authority"]) == 0
    identity = load_key_file(tmp_path / "data" / "identity.key")
    out = capsys.readouterr().out
    assert identity.node_id.hex() in out
    assert f"tp-relay --config {config}" in out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "# --listen" not in text  # help comments name the flag and variable in brackets instead
    assert "[--capacity, $TP_RELAY_CAPACITY]" in text
    assert '# family = ""' in text  # unset settings stay commented out with their default
    assert tomllib.loads(text) == {
        "listen": "0.0.0.0:7000",
        "capacity": 250,
        "authority": True,
        "data_dir": str(tmp_path / "data"),
    }
    args = resolve(relay_cli.build_parser(), "relay", ["--config", str(config)], environ={})
    assert (args.listen, args.capacity, args.authority) == (("0.0.0.0", 7000), 250, True)


def test_init_keeps_the_key_refuses_to_overwrite_and_rotates_the_key_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, data = tmp_path / "relay.toml", tmp_path / "data"
    argv = ["init", "--config", str(config), "--data-dir", str(data)]
    assert relay_cli.main(argv) == 0
    first = load_key_file(data / "identity.key").node_id
    with pytest.raises(SystemExit) as exited:
        relay_cli.main(argv)
    assert exited.value.code == 2
    assert "already exists (use --force to overwrite it)" in capsys.readouterr().err
    assert relay_cli.main([*argv, "--force"]) == 0
    assert "kept the existing key" in capsys.readouterr().out
    assert load_key_file(data / "identity.key").node_id == first
    config.write_text(config.read_text() + 'family = "mine"\n')
    assert relay_cli.main(["init", "--config", str(config), "--new-key"]) == 0  # data dir from the file
    assert "(unchanged)" in capsys.readouterr().out
    assert 'family = "mine"' in config.read_text()
    assert load_key_file(data / "identity.key").node_id != first
    (old,) = data.glob("identity.key.old-*")
    assert load_key_file(old).node_id == first


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--capacity", "0"], "--capacity: '0' is not an integer in 1..10000000"),
        (["--listen", "nowhere"], "--listen: 'nowhere' is not HOST:PORT"),
        (["--admission", "closed"], "invalid choice: 'closed'"),
    ],
)
def test_init_checks_values_like_the_role(
    tmp_path: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    with pytest.raises(SystemExit):
        relay_cli.main(["init", "--config", str(config), "--data-dir", str(tmp_path), *flags])
    assert message in capsys.readouterr().err
    assert not config.exists()


def test_node_init_writes_home_relays_and_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["init", "--config", "node.toml", "--data-dir", "node-data", "--home-relay", HOME, "--slots", "2"]
    assert node_cli.main(argv) == 0
    values = tomllib.loads((tmp_path / "node.toml").read_text())
    assert values == {"home_relay": [HOME], "slots": 2, "data_dir": str(tmp_path / "node-data")}
    assert (tmp_path / "node-data" / "identity.key").exists()
    args = resolve(node_cli.build_parser(), "node", ["--config", "node.toml"], environ={})
    assert args.home_relay[0].address == "ws://127.0.0.1:7001/"
