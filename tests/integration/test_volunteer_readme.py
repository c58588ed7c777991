"""README.md's quickstarts for a volunteer, a terminal user and a Pi operator, run as written: their shell
blocks are extracted and run in bash on 127.0.0.1 against a local network of processes (its bootstrap file
in $TP_BOOTSTRAP, a fresh $HOME), with the Hugging Face Hub a local fake ($HF_ENDPOINT) serving the tiny
model under the catalogue's name for Qwen2.5 1.5B (no sha256 pinned there: trusted on first use). The
relay's port 7000 becomes a free one."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from tests.tp_node.fake_hub import FakeHub, serve_fake_hub
from tp_dev.local_network import free_ports, local_network
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.trio.directory_client import fetch_directory
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.models import load_catalogue

README = Path(__file__).resolve().parents[2] / "README.md"
COMMANDS = {"tp-relay": "tp_node.relay_cli", "tp-node": "tp_node.node_cli", "tp-chat": "tp_gateway.chat_cli"}
MODEL = "qwen2.5-1.5b-instruct-q4_k_m"
ANSWER_TIMEOUT_S = 90.0
LISTED_TIMEOUT_S = 60.0


def blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL)


def shims(folder: Path) -> Path:
    folder.mkdir()
    for name, module in COMMANDS.items():
        path = folder / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        path.chmod(0o755)
    return folder


@contextmanager
def background(script: Path, cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        shell = subprocess.Popen(
            ["bash", str(script)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield
        finally:
            os.killpg(shell.pid, signal.SIGTERM)
            try:
                shell.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()


def run_terminal_user(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The terminal block, again until the volunteer's model is listed (it pulls and loads first)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        result = subprocess.run(
            ["bash", "-c", "set -e\n" + block],
            check=False,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=ANSWER_TIMEOUT_S,
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        assert "serves model" in result.stderr or "no signed directory" in result.stderr, result.stderr
        time.sleep(1)


async def relay_listed(bootstrap_file: Path, node_id: bytes) -> bool:
    bootstrap = load_bootstrap(bootstrap_file)
    sources = [authority.hop() for authority in bootstrap.authorities]
    async with trio.open_nursery() as nursery:
        dialer = WebSocketDialer(nursery)
        deadline = trio.current_time() + LISTED_TIMEOUT_S
        while trio.current_time() < deadline:
            trust, rng = bootstrap.trust(), random.Random()
            directory, _ = await fetch_directory(dialer, sources, trust, rng, time.time())
            if node_id in directory.relays:
                nursery.cancel_scope.cancel()
                return True
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return False


async def test_the_readme_quickstarts_run_as_written(tmp_path: Path, tiny_model_path: Path) -> None:
    (volunteer,) = blocks("Quickstart: serve a model (a volunteer with a GPU)")
    (terminal,) = blocks("Quickstart: chat from a terminal")
    (pi,) = blocks("Quickstart: run a relay (a Raspberry Pi)")
    assert MODEL in volunteer and MODEL in terminal
    (relay_port,) = free_ports(1)
    pi = pi.replace(":7000", f":{relay_port}")
    hub = FakeHub()
    hub.add(load_catalogue()[MODEL].hub, tiny_model_path.read_bytes())
    # A short home: the node's control socket path must fit a Unix socket address (107 bytes).
    home = Path(tempfile.mkdtemp(prefix="tp-home-", dir="/tmp"))
    try:
        await _run_quickstarts(tmp_path, home, volunteer=volunteer, terminal=terminal, pi=pi, hub=hub)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _run_quickstarts(
    tmp_path: Path, home: Path, *, volunteer: str, terminal: str, pi: str, hub: FakeHub
) -> None:
    with serve_fake_hub(hub):
        async with local_network(tmp_path / "network", log_level="warning") as network:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "XDG_", "HF_"))}
            env.update(
                HOME=str(home),
                PATH=f"{shims(tmp_path / 'bin')}:{env['PATH']}",
                PYTHONUNBUFFERED="1",
                TP_BOOTSTRAP=str(network.bootstrap_file),
                HF_ENDPOINT=hub.endpoint,
                RELAY_HOST="127.0.0.1",
            )
            (tmp_path / "volunteer.sh").write_text(volunteer)
            (tmp_path / "pi.sh").write_text(pi)
            volunteer_log, pi_log = tmp_path / "volunteer.log", tmp_path / "pi.log"
            with (
                background(tmp_path / "volunteer.sh", home, env, volunteer_log),
                background(tmp_path / "pi.sh", home, env, pi_log),
            ):
                chat = await trio.to_thread.run_sync(run_terminal_user, terminal, home, env)
                node_id = re.search(r"node id: ([0-9a-f]{64})", pi_log.read_text())
                assert node_id, pi_log.read_text()
                listed = await relay_listed(network.bootstrap_file, bytes.fromhex(node_id[1]))
            logs = volunteer_log.read_text()
    assert chat.returncode == 0, f"{chat.stderr}\n{logs[-3000:]}"
    answer, chatting = chat.stdout.split("\n", 1)
    assert answer.strip()  # --once: the answer
    assert f"chatting with {MODEL}" in chatting  # the interactive chat started (and ended at stdin's end)
    assert "] llama-cpp-python" in logs and "home relay" in logs  # the doctor's report
    assert "trusting it on first use" in logs  # the pull showed the hash it recorded
    assert listed, pi_log.read_text()[-3000:]
