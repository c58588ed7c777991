"""Resolving relay hostnames before path selection applies its /16 rule (trio edge of
tp_net.protocol.path_selection).

A relay may advertise `ws://name:port/`; without resolution every name is its own network, so one operator
could put many relays of one /16 behind different names. The gateway resolves the names of the directory's
relays (bounded in number, time and concurrency) and hands the answers to path selection
(`PathRules.resolved`); a name that does not resolve in time stays its own network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import trio

from tp_net.protocol.descriptors import RelayDescriptor
from tp_net.protocol.path_selection import subnet_key

HOSTNAMES_RESOLVED_MAX = 4_096  # per directory: names beyond this stay their own network
RESOLUTIONS_IN_FLIGHT_MAX = 8
RESOLUTION_TIMEOUT_S = 10.0  # for all of a directory's names together


def relay_hostnames(relays: Iterable[RelayDescriptor]) -> list[str]:
    """The lowercase hostnames (not IP literals) the relays advertise, sorted, at most the limit."""
    names = {key for key in (subnet_key(relay.address) for relay in relays) if not _is_network(key)}
    return sorted(names)[:HOSTNAMES_RESOLVED_MAX]


def _is_network(key: str) -> bool:
    try:
        ipaddress.ip_network(key)
    except ValueError:
        return False
    return True


async def resolve_relay_hosts(relays: Iterable[RelayDescriptor]) -> dict[str, str]:
    """hostname -> the first IP address it resolves to, for the names that resolved in time."""
    resolved: dict[str, str] = {}
    limiter = trio.CapacityLimiter(RESOLUTIONS_IN_FLIGHT_MAX)

    async def resolve(name: str) -> None:
        async with limiter:
            try:
                infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError:
                return
        addresses = [str(info[4][0]) for info in infos]
        if addresses:
            resolved[name] = addresses[0]

    with trio.move_on_after(RESOLUTION_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for name in relay_hostnames(relays):
                nursery.start_soon(resolve, name)
    return resolved
