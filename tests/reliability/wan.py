"""Hosts in network namespaces joined by an emulated WAN (tests/reliability/wan_switch.py; needs root).

`wan_hosts` makes one namespace per name and starts the switch, which gives each host a TAP device with the
address `10.N.0.1/8` (as tests/reliability/netns.py does on a bridge) and delays, drops or silences its
frames; `Wan.down`/`Wan.up` pull and replug a host's cable. `inside` moves the calling thread (the test's trio
thread) into a host's namespace, so that the test talks to a gateway there as its local client would. The
namespaces are deleted and the switch stopped even when the test fails.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import trio

from tests.reliability.netns import Host, _ip

SWITCH_READY_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 5.0
SWITCH_NICENESS = -15  # the switch is the wire: other load on the machine must not delay it
CLONE_NEWNET = 0x40000000


class Wan:
    def __init__(self, hosts: dict[str, Host], switch: trio.Process) -> None:
        self.hosts = hosts
        self._switch = switch
        self._buffer = bytearray()

    async def command(self, line: str) -> None:
        assert self._switch.stdin is not None and self._switch.stdout is not None
        await self._switch.stdin.send_all(f"{line}\n".encode())
        with trio.fail_after(COMMAND_TIMEOUT_S):
            while b"\n" not in self._buffer:
                chunk = await self._switch.stdout.receive_some()
                assert chunk, "the WAN switch ended"
                self._buffer += chunk
        reply, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        assert reply == b"ok", reply

    async def down(self, name: str) -> None:
        """Every frame to and from the host is dropped from now on; nothing is closed."""
        await self.command(f"down {self.hosts[name].namespace}")

    async def up(self, name: str) -> None:
        await self.command(f"up {self.hosts[name].namespace}")

    async def set_link(self, name: str, one_way_ms: float, jitter_ms: float, loss: float) -> None:
        await self.command(f"set {self.hosts[name].namespace} {one_way_ms} {jitter_ms} {loss}")


@asynccontextmanager
async def wan_hosts(
    names: Sequence[str], *, one_way_ms: float, jitter_ms: float = 0.0, loss: float = 0.0
) -> AsyncIterator[Wan]:
    """One namespace per name on the emulated WAN; every host's one-way delay `one_way_ms` (so a round trip
    between two hosts is 4x that), jitter up to `jitter_ms`, loss `loss` per frame and host."""
    suffix = secrets.token_hex(3)
    namespaces = {name: f"tp-{suffix}-{name}" for name in names}
    created: list[str] = []
    try:
        for namespace in namespaces.values():
            _ip("netns", "add", namespace)
            created.append(namespace)
        args = [sys.executable, "-m", "tests.reliability.wan_switch", "--one-way-ms", str(one_way_ms)]
        args += ["--jitter-ms", str(jitter_ms), "--loss", str(loss), *namespaces.values()]
        switch = await trio.lowlevel.open_process(
            ["nice", "-n", str(SWITCH_NICENESS), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert switch.stdout is not None
            line = bytearray()
            with trio.fail_after(SWITCH_READY_TIMEOUT_S):
                while b"\n" not in line:
                    chunk = await switch.stdout.receive_some()
                    assert chunk, "the WAN switch ended before it was ready"
                    line += chunk
            first, _, rest = bytes(line).partition(b"\n")
            addresses = json.loads(first)["ready"]
            hosts = {name: Host(namespace, addresses[namespace]) for name, namespace in namespaces.items()}
            wan = Wan(hosts, switch)
            wan._buffer += rest
            yield wan
        finally:
            switch.kill()
            await switch.wait()
    finally:
        for namespace in reversed(created):
            _ip("netns", "del", namespace, check=False)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


@contextmanager
def inside(host: Host) -> Iterator[None]:
    """The calling thread's sockets are `host`'s while this lasts (setns on this thread only)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{host.namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
