"""`python -m bootstrap.invite`: an authority's invitation that the directory accepts for that node only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bootstrap import invite
from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_cli.config import resolve
from tp_crypto.identity import Identity, create_key_file
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.directory import DirectoryError, check_invitation
from tp_node import relay_cli

NODE = Identity(bytes(range(32)))


@pytest.fixture
def network(tmp_path: Path) -> Path:
    create_network(tmp_path, "invite-test", ["ws://127.0.0.1:1/"], 1, period_s=4, local=True)
    return tmp_path


def test_an_invitation_admits_the_invited_node_only(
    network: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = network / "node.invitation"
    argv = ["--authority-key", str(network / "authority-1" / "identity.key")]
    argv += ["--bootstrap", str(network / BOOTSTRAP_FILE_NAME), "--node-id", NODE.node_id.hex()]
    assert invite.main([*argv, "--days", "30", "--out", str(out)]) == 0
    assert "until" in capsys.readouterr().out
    trust = load_bootstrap(network / BOOTSTRAP_FILE_NAME).trust()
    check_invitation(out.read_bytes(), NODE.node_id, trust, time.time())
    with pytest.raises(DirectoryError, match="another node"):
        check_invitation(out.read_bytes(), bytes(32), trust, time.time())
    with pytest.raises(DirectoryError, match="expired"):
        check_invitation(out.read_bytes(), NODE.node_id, trust, time.time() + 31 * 24 * 3600)


def test_a_relay_takes_its_invitation_from_the_config_file(network: Path) -> None:
    config = network / "relay.toml"
    config.write_text('invitation = "node.invitation"\n')
    args = resolve(relay_cli.build_parser(), "relay", ["--config", str(config)], environ={})
    assert args.invitation == network / "node.invitation"


def invite_argv(network: Path, key: Path) -> list[str]:
    argv = ["--authority-key", str(key), "--bootstrap", str(network / BOOTSTRAP_FILE_NAME)]
    return [*argv, "--node-id", NODE.node_id.hex(), "--out", str(network / "x.invitation")]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--node-id", "abc"], "--node-id 'abc' is not 64 hex digits"),
        (["--days", "0"], "--days 0 is not in 1..3650"),
    ],
)
def test_bad_values_are_refused(
    network: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        invite.main([*invite_argv(network, network / "authority-1" / "identity.key"), *flags])
    assert message in capsys.readouterr().err


def test_only_an_authority_may_invite(network: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = network / "stranger.key"
    create_key_file(stranger)
    with pytest.raises(SystemExit):
        invite.main(invite_argv(network, stranger))
    assert "is not an authority of network 'invite-test'" in capsys.readouterr().err
    assert not (network / "x.invitation").exists()
