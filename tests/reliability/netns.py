"""Linux network namespaces for tests (needs root): hosts with their own address on one bridge.

A "switch" namespace holds a bridge; each host namespace gets a veth pair into it and an address
`10.N.0.1/8`, so that hosts are in different /16s (path selection keeps a circuit's relays in different
/16s) and still reach each other directly. Every name carries a random suffix, so runs never collide, and
`closing_hosts` deletes the namespaces (which removes their veths and bridge) even when the test fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

HOST_PREFIX_BITS = 8
COMMAND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str  # its IPv4 address on the bridge

    def prefix(self) -> list[str]:
        """Run a command in this host's namespace."""
        return ["ip", "netns", "exec", self.namespace]


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the netns tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if shutil.which("ss") is None:
        return "the `ss` command (iproute2) is not installed"
    probe = f"tp-probe-{secrets.token_hex(3)}"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=check, timeout=COMMAND_TIMEOUT_S
    )


def run_in(host: Host, command: Sequence[str]) -> str:
    """stdout of a short command run in `host`'s namespace."""
    result = subprocess.run(
        [*host.prefix(), *command], capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT_S
    )
    return result.stdout


@contextmanager
def closing_hosts(names: Sequence[str]) -> Iterator[dict[str, Host]]:
    """One namespace per name, each `10.N.0.1/8` on a shared bridge; all deleted afterwards."""
    suffix = secrets.token_hex(3)
    switch = f"tp-{suffix}-sw"
    created = []
    try:
        _ip("netns", "add", switch)
        created.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        hosts = {}
        for number, name in enumerate(names, start=1):
            namespace = f"tp-{suffix}-{name}"
            _ip("netns", "add", namespace)
            created.append(namespace)
            port = f"v{number}"
            _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            address = f"10.{number}.0.1"
            _ip("-n", namespace, "addr", "add", f"{address}/{HOST_PREFIX_BITS}", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            hosts[name] = Host(namespace, address)
        yield hosts
    finally:
        for namespace in reversed(created):
            _ip("netns", "del", namespace, check=False)


def tcp_peers(host: Host) -> set[str]:
    """Addresses of the peers of `host`'s TCP connections (`ss -tn`)."""
    peers = set()
    for line in run_in(host, ["ss", "-tnH"]).splitlines():
        fields = line.split()
        if len(fields) >= 5:
            peers.add(fields[4].rsplit(":", 1)[0])
    return peers


def listening_addresses(host: Host) -> set[str]:
    """Local addresses of `host`'s listening TCP sockets (`ss -ltn`)."""
    return {line.split()[3].rsplit(":", 1)[0] for line in run_in(host, ["ss", "-ltnH"]).splitlines()}
