"""Where a relay may extend a circuit it has no link for, sans-IO (Tor: extend only to relays, and
ExtendAllowPrivateAddresses).

An EXTEND names a node id and an address. Without a policy a relay would dial whatever a stranger typed: a
blind SSRF and port scanner. With one, a relay dials only a relay that its current directory lists, at the
address listed for that id (the client's address is ignored), and never a private, loopback, link-local,
multicast or unspecified address unless the network is `local` (see ExtendPolicy for what else `local`
relaxes). A node already linked to the relay (a GPU node behind NAT on its own link, a relay linked
before) needs no dial and no policy: see HopCore._extend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tp_net.protocol.addresses import AddressError, is_private_host, parse_address

# The relays the relay's current directory lists (node id -> address), or None while it has none yet.
ListedRelays = Callable[[], Mapping[bytes, str] | None]


@dataclass(frozen=True)
class ExtendPolicy:
    """`listed_relays`: the relay's view of the directory. `local_network`: the bootstrap file marks the
    network `local` (every relay on one host; tests and demos): private addresses are allowed, and a relay
    its directory does not list yet (a network still starting) is dialed at the client's address, with the
    path replaced by "/". A listed relay is always dialed at its listed address."""

    listed_relays: ListedRelays
    local_network: bool = False

    def dial_address(self, node_id: bytes, requested: str | None) -> str | None:
        """The address to dial for an EXTEND to `node_id`, or None: the circuit gets CONNECT_FAILED."""
        address = (self.listed_relays() or {}).get(node_id)
        path = None  # a listed address is dialed as published (its descriptor was validated)
        if address is None and self.local_network:
            address, path = requested, "/"
        if address is None:
            return None  # not a relay of the directory (or no directory yet)
        try:
            parsed = parse_address(address)
        except AddressError:
            return None
        if is_private_host(parsed.host) and not self.local_network:
            return None
        return parsed.url(path)
