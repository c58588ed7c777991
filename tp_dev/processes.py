"""Start and stop token.place processes (tests, benchmarks, the demo): each announces itself with one JSON
line on stdout and is always stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class StartedProcess:
    def __init__(self, process: trio.Process, announcement: dict[str, Any], stdout: bytearray) -> None:
        self.process = process
        self.announcement = announcement
        # Every byte the process wrote to stdout, its announcement included, read as it comes (so a chatty
        # process never blocks on a full pipe); complete once `stdout_closed` is set.
        self.stdout = stdout
        self.stdout_closed = trio.Event()

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _read_line(stream: trio.abc.ReceiveStream, output: bytearray) -> bytes:
    while b"\n" not in output:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError(f"process exited before announcing itself: {bytes(output)!r}")
        output += chunk
    return bytes(output.split(b"\n", 1)[0])


async def _read_rest(stream: trio.abc.ReceiveStream, started: StartedProcess) -> None:
    try:
        while chunk := await stream.receive_some(65536):
            started.stdout += chunk
    finally:
        started.stdout_closed.set()


@asynccontextmanager
async def python_process(
    args: Sequence[str], *, prefix: Sequence[str] = (), stderr: int | None = None
) -> AsyncIterator[StartedProcess]:
    """Run `python -m ARGS` (after `prefix`, e.g. taskset); wait for its first stdout line (JSON), then keep
    reading its stdout into StartedProcess.stdout; SIGTERM (then SIGKILL) it at the end."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = await trio.lowlevel.open_process(
        [*prefix, sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=stderr, env=env
    )
    try:
        assert process.stdout is not None
        output = bytearray()
        with trio.fail_after(STARTUP_TIMEOUT_S):
            line = await _read_line(process.stdout, output)
        started = StartedProcess(process, json.loads(line), output)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_rest, process.stdout, started)
            try:
                yield started
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process)
                    with trio.move_on_after(STOP_TIMEOUT_S):
                        await started.stdout_closed.wait()  # what it wrote before it exited
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)
            if process.stdout is not None:
                await process.stdout.aclose()


async def _stop(process: trio.Process) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; a process that ignores SIGTERM fails the test."""
    terminated = process.returncode is None
    if terminated:
        os.kill(process.pid, signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_S):
            await process.wait()
    if process.returncode is None:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        raise AssertionError(f"process {process.pid} did not stop on SIGTERM")
    if terminated and process.returncode != 0:
        raise AssertionError(f"process {process.pid} exited with {process.returncode} after SIGTERM")
