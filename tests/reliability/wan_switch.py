"""A userspace Ethernet switch that emulates WAN links between network namespaces (needs root).

The kernel here has no netem, so this process stands in for it: it opens one TAP device per host, moves it
into the host's namespace (there it carries the host's address, `10.N.0.1/8`), and forwards Ethernet
frames between the TAPs, each one delayed by both hosts' one-way delays plus jitter (a link keeps its frames
in order, like a real one), and dropped with each host's loss probability. A host set `down` drops every
frame to and from it without closing anything: the pulled cable.

    python -m tests.reliability.wan_switch --one-way-ms 20 NAMESPACE...

It prints one JSON line, {"ready": {NAMESPACE: ADDRESS, ...}}, once every host is configured, then reads
commands on stdin, one a line, each answered by a line "ok":

    down NAMESPACE | up NAMESPACE | set NAMESPACE ONE_WAY_MS JITTER_MS LOSS

It ends (and the TAPs vanish with it) when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import heapq
import json
import os
import random
import secrets
import selectors
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
FRAME_BYTES_MAX = 65536
HOST_PREFIX_BITS = 8
BROADCAST = b"\xff" * 6
COMMAND_TIMEOUT_S = 10.0
SELECT_IDLE_S = 0.5
SEED = 25


@dataclass
class Port:
    namespace: str
    fd: int
    one_way_s: float
    jitter_s: float = 0.0
    loss: float = 0.0
    down: bool = False


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)


def open_tap(namespace: str, number: int) -> int:
    """A TAP device for `namespace`, addressed 10.NUMBER.0.1/8 there; its fd stays here."""
    name = f"tw{secrets.token_hex(4)}{number}"[:15]
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    _ip("link", "set", "dev", name, "netns", namespace)
    _ip("-n", namespace, "addr", "add", f"10.{number}.0.1/{HOST_PREFIX_BITS}", "dev", name)
    _ip("-n", namespace, "link", "set", name, "up")
    _ip("-n", namespace, "link", "set", "lo", "up")
    return fd


class Switch:
    def __init__(self, ports: list[Port]) -> None:
        self.ports = ports
        self.by_name = {port.namespace: port for port in ports}
        self.macs: dict[bytes, Port] = {}
        self.rng = random.Random(SEED)
        self._due: list[tuple[float, int, int, bytes]] = []  # (when, order, fd, frame)
        self._order = 0
        self._last_due: dict[tuple[int, int], float] = {}  # per (from fd, to fd): frames stay in order

    def command(self, line: str) -> None:
        words = line.split()
        port = self.by_name[words[1]]
        if words[0] == "down":
            port.down = True
        elif words[0] == "up":
            port.down = False
        elif words[0] == "set":
            port.one_way_s = float(words[2]) / 1000
            port.jitter_s = float(words[3]) / 1000
            port.loss = float(words[4])
        else:
            raise ValueError(words[0])

    def received(self, source: Port, frame: bytes, now: float) -> None:
        if len(frame) < 14 or source.down:
            return
        self.macs[frame[6:12]] = source
        destination = self.macs.get(frame[:6])
        targets = [destination] if destination is not None and frame[:6] != BROADCAST else self.ports
        for target in targets:
            if target is source or target.down:
                continue
            if self.rng.random() < source.loss or self.rng.random() < target.loss:
                continue
            delay = source.one_way_s + target.one_way_s
            delay += self.rng.uniform(0, source.jitter_s) + self.rng.uniform(0, target.jitter_s)
            key = (source.fd, target.fd)
            when = max(now + delay, self._last_due.get(key, 0.0))
            self._last_due[key] = when
            self._order += 1
            heapq.heappush(self._due, (when, self._order, target.fd, frame))

    def deliver_due(self, now: float) -> float | None:
        """Write every frame that is due; seconds until the next one, or None."""
        while self._due and self._due[0][0] <= now:
            _, _, fd, frame = heapq.heappop(self._due)
            target = next(port for port in self.ports if port.fd == fd)
            if target.down:
                continue
            with contextlib.suppress(BlockingIOError):  # a full TAP queue drops, as a real link would
                os.write(fd, frame)
        return self._due[0][0] - now if self._due else None


def serve(switch: Switch) -> None:
    selector = selectors.DefaultSelector()
    for port in switch.ports:
        selector.register(port.fd, selectors.EVENT_READ, port)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        wait = switch.deliver_due(time.monotonic())
        for key, _ in selector.select(SELECT_IDLE_S if wait is None else max(wait, 0.0)):
            if key.data is None:
                line = sys.stdin.readline()
                if not line:
                    return
                switch.command(line)
                print("ok", flush=True)
                continue
            port = key.data
            while True:
                try:
                    frame = os.read(port.fd, FRAME_BYTES_MAX)
                except BlockingIOError:
                    break
                switch.received(port, frame, time.monotonic())


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--one-way-ms", type=float, default=0.0, help="each host's one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="per host, per frame")
    parser.add_argument("namespaces", nargs="+")
    args = parser.parse_args()
    ports = []
    addresses = {}
    for number, namespace in enumerate(args.namespaces, start=1):
        fd = open_tap(namespace, number)
        ports.append(Port(namespace, fd, args.one_way_ms / 1000, args.jitter_ms / 1000, args.loss))
        addresses[namespace] = f"10.{number}.0.1"
    print(json.dumps({"ready": addresses}), flush=True)
    serve(Switch(ports))


if __name__ == "__main__":
    main()
