"""`tp-demo --once`, the README's first command for a new user: it starts a whole local network and the
gateway as processes, sends one chat completion through them, prints the answer and exits 0, stopping
everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

DEMO_TIMEOUT_S = 240.0


async def test_tp_demo_once_answers_through_the_network_and_exits_0(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    command = [sys.executable, "-m", "tp_dev.demo", "--once", "--state-dir", str(state)]
    command += ["--gateway", "127.0.0.1:0"]  # any free port: never the user's 8000
    with trio.fail_after(DEMO_TIMEOUT_S):  # on timeout trio terminates it, and the demo stops its processes
        result = await trio.run_process(
            command,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err[-2000:]
    assert "tiny answered: " in out and out.split("tiny answered: ", 1)[1].strip(), out
    assert (state / "network" / "bootstrap.json").is_file(), "the README points the in-process client here"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(state) not in ps, "the demo stopped every process it started"
