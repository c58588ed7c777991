"""tp-chat against a local network of processes (three relays that are the authorities, a tp-node with the
fake engine pacing its words): `--once` answers, a model the network lacks is named, and in a
pseudo-terminal an answer streams, Ctrl-C stops it without ending the program, and the chat goes on."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import trio

from tp_dev.local_network import local_network

TOKEN_DELAY_MS = "40"  # the fake engine's pace: a long answer takes long enough to be stopped
READ_TIMEOUT_S = 60.0


def chat_argv(bootstrap: Path, data_dir: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "tp_gateway.chat_cli", "--bootstrap", str(bootstrap)]
    return [*base, "--data-dir", str(data_dir), *extra]


class PtyChat:
    """tp-chat on a pseudo-terminal of its own (so ^C there is SIGINT to it, as for a person typing)."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes tp-chat
            os.execv(argv[0], argv)
        self.seen = b""

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def read_until(self, marker: bytes, timeout_s: float = READ_TIMEOUT_S) -> bytes:
        """Everything read up to and including `marker` (from where the last read stopped)."""
        deadline = time.monotonic() + timeout_s
        while marker not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} on the terminal; it shows {self.seen[-2000:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                assert data, f"tp-chat exited before {marker!r}; it showed {self.seen[-2000:]!r}"
                self.seen += data
        before, _, self.seen = self.seen.partition(marker)
        return before + marker

    def wait(self, timeout_s: float = 20.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.seen += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise AssertionError("tp-chat did not exit")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def drive_interactive_chat(bootstrap: Path, data_dir: Path) -> None:
    chat = PtyChat(chat_argv(bootstrap, data_dir, "--max-tokens", "2000"))
    try:
        chat.read_until(b"chatting with fake")
        chat.read_until(b"> ")
        chat.type(b"tell me a long story\n")
        chat.read_until(b"tell me a long story\r\n")  # the terminal's echo
        first = chat.read_until(b" ")  # a word streamed: the answer has started...
        first += chat.read_until(b" ")
        assert len(first.split()) >= 1
        chat.type(b"\x03")  # ...and Ctrl-C stops it,
        chat.read_until(b"(stopped)")
        chat.read_until(b"> ")  # not the program: the next prompt comes
        chat.type(b"and then?\n")
        chat.read_until(b"and then?\r\n")
        assert chat.read_until(b" ").strip()  # the conversation goes on
        chat.type(b"\x03")
        chat.read_until(b"(stopped)")
        chat.read_until(b"> ")
        chat.type(b"/quit\n")
        assert chat.wait() == 0
    finally:
        chat.kill()


async def test_tp_chat_answers_once_names_missing_models_and_chats_in_a_terminal(tmp_path: Path) -> None:
    node_args = ["--fake-token-delay-ms", TOKEN_DELAY_MS]
    async with local_network(tmp_path, node_args=node_args, log_level="warning") as network:
        bootstrap, data_dir = network.bootstrap_file, tmp_path / "chat"
        once = await trio.run_process(
            chat_argv(bootstrap, data_dir, "--once", "hello", "--max-tokens", "5"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert once.returncode == 0, once.stderr.decode()
        assert len(once.stdout.split()) == 5  # five of the fake's words
        missing = await trio.run_process(
            chat_argv(bootstrap, data_dir, "--once", "hello", "--model", "no-such-model"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert missing.returncode == 1
        assert missing.stderr.decode().strip() == (
            "error: no node of this network serves model 'no-such-model' (models served: fake)"
        )
        assert b"hello" not in missing.stderr + missing.stdout  # a prompt is never echoed in an error
        await trio.to_thread.run_sync(drive_interactive_chat, bootstrap, data_dir)
