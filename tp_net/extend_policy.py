"""Where a relay may extend a circuit it has no link for, sans-IO (Tor: extend only to relays, and
ExtendAllowPrivateAddresses).

An EXTEND names a node id and an address. Without a policy a relay would dial whatever a stranger typed: a
blind SSRF and port scanner. With one, a relay dials only a relay that its current directory lists, at the
address listed for that id (the client's address is ignored), and never a private, loopback, link-local,
multicast or unspecified address unless the network is `local`. A node already linked to the relay (a GPU
node behind NAT on its own link, a relay linked before) needs no dial and no policy: see HopCore._extend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tp_net.addresses import AddressError, is_private_host, parse_address

# The relays the relay's current directory lists (node id -> address), or None while it has none yet.
ListedRelays = Callable[[], Mapping[bytes, str] | None]


@dataclass(frozen=True)
class ExtendPolicy:
    """`listed_relays`: the relay's view of the directory. `local_network`: the bootstrap file marks the
    network `local` (every relay on one host): private addresses are allowed, and until the relay has a
    directory it dials the client's address (with its path replaced by "/")."""

    listed_relays: ListedRelays
    local_network: bool = False

    def dial_address(self, node_id: bytes, requested: str | None) -> str | None:
        """The address to dial for an EXTEND to `node_id`, or None: the circuit gets CONNECT_FAILED."""
        listed = self.listed_relays()
        if listed is not None:
            address = listed.get(node_id)
            path = None  # the listed address as published (its descriptor was validated)
        elif self.local_network:
            address, path = requested, "/"
        else:
            return None  # no directory yet: nothing is known to be a relay
        if address is None:
            return None
        try:
            parsed = parse_address(address)
        except AddressError:
            return None
        if is_private_host(parsed.host) and not self.local_network:
            return None
        return parsed.url(path)
