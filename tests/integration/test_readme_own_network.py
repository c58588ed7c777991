"""README.md's "Run your own network" section, run as written: its shell blocks are extracted from the README,
the ports are swapped for free ones, and the commands run in bash on 127.0.0.1 (`tp-relay`, `tp-node`,
`tp-gateway` and `python` are this checkout's). The first chat completion must answer within
FIRST_ANSWER_S of the last authority starting."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tp_dev.local_network import free_ports

FIRST_ANSWER_S = 30.0
SCRIPT_TIMEOUT_S = 120.0
SECTION = "## Run your own network"
README = Path(__file__).resolve().parents[2] / "README.md"
COMMANDS = {
    "tp-relay": "tp_node.relay_cli",
    "tp-node": "tp_node.node_cli",
    "tp-gateway": "tp_gateway.cli",
}
MARKER = "last-authority-started"


def section_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def with_free_ports(blocks: list[str]) -> list[str]:
    ports = sorted({int(p) for block in blocks for p in re.findall(r"127\.0\.0\.1:(\d+)", block)})
    mapping = dict(zip(ports, free_ports(len(ports)), strict=True))
    return [re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{mapping[int(m[1])]}", b) for b in blocks]


def shims(folder: Path) -> Path:
    """This checkout's console scripts and python, first on PATH."""
    folder.mkdir()
    programs = {name: f'exec "{sys.executable}" -m {module} "$@"' for name, module in COMMANDS.items()}
    programs["python"] = f'exec "{sys.executable}" "$@"'
    for name, body in programs.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return folder


def mark_last_authority(script: str) -> str:
    """After the last authority's line, note the time (the clock of the acceptance starts there)."""
    lines = script.splitlines()
    authorities = [i for i, line in enumerate(lines) if line.startswith("tp-relay --authority")]
    if not authorities:
        return script
    last = authorities[-1]
    lines.insert(last + 1, f"date +%s.%N > {MARKER}")
    return "\n".join(lines) + "\n"


def chat_request(curl_block: str) -> tuple[str, bytes]:
    url = re.search(r"(http://\S+)", curl_block)
    body = re.search(r"-d '(.*?)'", curl_block, flags=re.DOTALL)
    assert url and body, curl_block
    return url[1], body[1].encode()


def post(url: str, body: bytes, timeout_s: float) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_readme_own_network_answers_within_30_s_of_the_last_authority(tmp_path: Path) -> None:
    *setup, curl_block = with_free_ports(section_blocks())
    assert len(setup) == 2 and "curl" in curl_block, "the section: setup, start, then one curl"
    script = tmp_path / "own-network.sh"
    script.write_text("set -e\n" + "".join(mark_last_authority(block) for block in setup))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "XDG_"))}
    env.update(HOME=str(home), PATH=f"{shims(tmp_path / 'bin')}:{env['PATH']}", PYTHONUNBUFFERED="1")
    log = (tmp_path / "processes.log").open("wb")
    shell = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert shell.wait(SCRIPT_TIMEOUT_S) == 0, (tmp_path / "processes.log").read_text()[-4000:]
        started = float((tmp_path / MARKER).read_text())
        url, body = chat_request(curl_block)
        status, answer = 0, {}
        while time.time() < started + FIRST_ANSWER_S:
            try:  # a request may take the rest of the time: the answer counts when it comes
                status, answer = post(url, body, max(1.0, started + FIRST_ANSWER_S - time.time()))
            except (OSError, ValueError):
                status = 0  # the gateway is not listening yet
            if status == 200:
                break
            time.sleep(0.5)
        answered_after = time.time() - started
        print(f"first answer {answered_after:.1f} s after the last authority started")
        logs = (tmp_path / "processes.log").read_text()[-6000:]
        assert status == 200, f"last answer {status} {answer}\n{logs}"
        assert answered_after <= FIRST_ANSWER_S + 1, answered_after
        choices = answer["choices"]
        assert isinstance(choices, list) and choices[0]["message"]["content"], answer
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and _group_alive(shell.pid):
            time.sleep(0.2)
        if _group_alive(shell.pid):
            os.killpg(shell.pid, signal.SIGKILL)
        log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
