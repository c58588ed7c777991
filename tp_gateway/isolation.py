"""Request isolation: which requests may share a pooled circuit (PROTOCOL.md 8.1).

A node sees every request of a circuit as coming from one client. So a pooled circuit carries the requests
of one isolation key only: at the gateway, the API key the request came with (hashed with a key made for
this process, so the digest is worthless outside it and the raw key is never kept); requests without a key
share ANONYMOUS. The in-process client (tp_gateway.client) runs an overlay of its own per client instance,
so instances never share circuits. `None` isolates one request alone (sealed requests: tp_gateway.overlay).
The pool limits (how many keys, circuits per key, requests per circuit) live in tp_gateway.overlay.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from typing import Final

# What requests without an API key share; no digest (ISOLATION_DIGEST_BYTES long) can equal it.
ANONYMOUS: Final = b"anonymous"
ISOLATION_DIGEST_BYTES = 16
_PROCESS_KEY = secrets.token_bytes(32)  # made at start, never stored: digests are comparable here only

Isolation = bytes | None  # an isolation key; None: this request alone


def bearer_token(authorization: str | None) -> str:
    """The API key of an Authorization header ("Bearer KEY"), or "" when there is none."""
    return (authorization or "").removeprefix("Bearer ").strip()


def api_key_isolation(authorization: str | None) -> bytes:
    """The isolation key of a request with this Authorization header: a keyed digest of its API key, or
    ANONYMOUS without one."""
    token = bearer_token(authorization)
    if not token:
        return ANONYMOUS
    digest = hashlib.blake2b(
        token.encode(), key=_PROCESS_KEY, digest_size=ISOLATION_DIGEST_BYTES, person=b"tp-isolation"
    )
    return digest.digest()


class RecentKeys:
    """The isolation keys that hold pooled circuits, least recently used first, at most `keys_max`."""

    def __init__(self, keys_max: int) -> None:
        self._keys_max = keys_max
        self._order: OrderedDict[bytes, None] = OrderedDict()

    def use(self, key: bytes) -> list[bytes]:
        """Mark `key` used now; returns the keys dropped to stay within the bound (their circuits go)."""
        self._order[key] = None
        self._order.move_to_end(key)
        dropped = []
        while len(self._order) > self._keys_max:
            oldest, _ = self._order.popitem(last=False)
            dropped.append(oldest)
        return dropped

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def __len__(self) -> int:
        return len(self._order)
