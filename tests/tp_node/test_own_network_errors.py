"""Each mistake of running your own network (issue 24) gets a message that names its fix."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from bootstrap import new_network
from tp_cli.config import file_value, settings
from tp_cli.config_file import render_config
from tp_crypto.identity import load_key_file
from tp_net.protocol.bootstrap_config import BootstrapError, load_bootstrap
from tp_node import node_cli, relay_cli
from tp_node.listen_errors import ListenError
from tp_node.metrics_http import serve_metrics
from tp_node.models import resolve_model
from tp_node.models_cli import main as models_main
from tp_node.relay_cli import LISTEN_DEFAULT, listen_and_advertise

ONE_HOST = ["ws://127.0.0.1:7001/", "ws://127.0.0.1:7002/", "ws://127.0.0.1:7003/"]


def make_network(out: Path, addresses: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["--name", "n", "--threshold", "2", "--out", str(out)]
    for address in addresses:
        argv += ["--authority", address]
    assert new_network.main(argv) == 0
    return capsys.readouterr().out


def test_a_one_host_network_is_marked_local_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = make_network(tmp_path / "net", ONE_HOST, capsys)
    assert load_bootstrap(tmp_path / "net" / "bootstrap.json").local
    assert "127.0.0.0/16: marked local" in out
    data_dir = (tmp_path / "net" / "authority-2").absolute()
    assert f"--data-dir {data_dir}" in out, "it says which folder is an authority's --data-dir"
    spread = ["ws://10.1.0.1:7000/", "ws://10.2.0.1:7000/", "ws://10.3.0.1:7000/"]
    make_network(tmp_path / "real", spread, capsys)
    assert not load_bootstrap(tmp_path / "real" / "bootstrap.json").local


def authority_args(tmp_path: Path, index: int, *flags: str) -> argparse.Namespace:
    data_dir = tmp_path / "net" / f"authority-{index}"
    argv = [
        "--authority",
        "--data-dir",
        str(data_dir),
        "--bootstrap",
        str(tmp_path / "net" / "bootstrap.json"),
    ]
    return relay_cli.build_parser().parse_args([*argv, *flags])


def place(tmp_path: Path, index: int, *flags: str) -> tuple[tuple[str, int], str | None]:
    args = authority_args(tmp_path, index, *flags)
    identity = load_key_file(args.data_dir / "identity.key")
    return listen_and_advertise(args, identity, load_bootstrap(args.bootstrap))


def test_an_authority_listens_where_its_entry_says_and_a_mismatch_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_network(tmp_path / "net", ONE_HOST, capsys)
    assert place(tmp_path, 2) == (("127.0.0.1", 7002), ONE_HOST[1])
    assert place(tmp_path, 3, "--listen", "0.0.0.0:7003") == (("0.0.0.0", 7003), ONE_HOST[2])
    with pytest.raises(BootstrapError, match=r"ws://127\.0\.0\.1:7001/.*drop --listen"):
        place(tmp_path, 1, "--listen", "127.0.0.1:7005")
    with pytest.raises(BootstrapError, match="drop --advertise"):
        place(tmp_path, 1, "--advertise", "ws://127.0.0.1:7009/")
    plain = relay_cli.build_parser().parse_args(["--data-dir", str(tmp_path / "r")])
    assert listen_and_advertise(
        plain,
        load_key_file(tmp_path / "net" / "authority-1" / "identity.key"),
        load_bootstrap(tmp_path / "net" / "bootstrap.json"),
    ) == (LISTEN_DEFAULT, None)


async def test_a_taken_port_names_the_address_the_listener_and_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            await serve_metrics("127.0.0.1", port, dict)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "Prometheus /metrics" in message
    assert "--metrics another port" in message


@pytest.mark.parametrize(
    "role, build_parser", [("relay", relay_cli.build_parser), ("node", node_cli.build_parser)]
)
def test_every_commented_example_is_valid_when_uncommented(role: str, build_parser: object) -> None:
    actions = settings(build_parser())  # type: ignore[operator]
    text = render_config(role, actions, {}, Path("/etc/token.place/x.toml"))
    examples = re.findall(r"^# (\w+ = .*)$", text, flags=re.MULTILINE)
    assert {"bootstrap", "listen" if role == "relay" else "home_relay"} <= {e.split(" ")[0] for e in examples}
    for example in examples:
        key, value = next(iter(tomllib.loads(example).items()))
        file_value(actions[key], value, key, Path("/etc/token.place"))


def test_node_init_writes_the_model_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    home = "ab" * 32 + "@ws://127.0.0.1:7011/"
    argv = ["init", "--config", "node.toml", "--data-dir", "node", "--home-relay", home]
    assert node_cli.main([*argv, "--engine", "llama", "--model", "models/tiny.gguf"]) == 0
    written = tomllib.loads((tmp_path / "node.toml").read_text())
    assert written["model"] == str(tmp_path / "models" / "tiny.gguf")
    assert written["data_dir"] == str(tmp_path / "node")


def test_the_tiny_model_is_written_offline_where_model_tiny_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "does" / "not" / "exist"
    with pytest.raises(Exception, match="run `tp-node models tiny` first"):
        resolve_model("tiny", cache)
    assert models_main(["tiny", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    sha256 = re.search(r"sha256 ([0-9a-f]{64})", out)
    assert sha256 is not None
    path = resolve_model("tiny", cache).path
    assert path == cache / sha256[1] / "tiny.gguf" and path.is_file()
    assert json.dumps(str(path)) and str(path) in out


def test_make_install_only_sets_up_the_venv() -> None:
    repo = Path(__file__).resolve().parents[2]
    planned = subprocess.run(["make", "-n", "install"], cwd=repo, capture_output=True, text=True, check=True)
    commands = planned.stdout
    assert not re.search(r"pytest|tp-demo|ruff|mypy|tp-sim|benchmarks", commands), commands
    assert "make: *** No rule" not in planned.stderr
