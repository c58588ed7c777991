"""`tp-gateway --public`, sans-IO: what a gateway serving other people (other machines, other origins) allows.

A public gateway must never see a prompt: its plaintext inference routes answer loopback clients only (its
operator), and everyone else uses the sealed routes (PROTOCOL.md 9), which any origin may call (CORS `*`:
their answers are ciphertext to everyone but the sealing client). Each client address gets a token bucket
for sealed requests, checked before the body is read; the buckets of the addresses seen least recently are
forgotten past SEALED_RATE_ADDRESSES_MAX.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from tp_gateway.openai_errors import ApiError
from tp_net.protocol.rate_limits import TokenBucket

# Sealed requests one client address (an IPv6 /64) may send: a steady rate and a burst.
SEALED_REQUESTS_PER_ADDRESS_RATE_PER_S = 1.0
SEALED_REQUESTS_PER_ADDRESS_BURST = 20
# Addresses whose buckets are kept (least recently seen forgotten first).
SEALED_RATE_ADDRESSES_MAX = 4096
# Routes that carry prompts in the clear (endpoint names, under every API prefix).
PLAINTEXT_VIEWS = frozenset({"chat", "completions", "embeddings"})
SEALED_VIEWS = frozenset({"sealed", "sealed_directory", "sealed_bootstrap"})
PUBLIC_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def view_of(endpoint: str | None) -> str:
    """The view of an endpoint name ("v1.chat" -> "chat")."""
    return (endpoint or "").rpartition(".")[2]


def is_loopback_client(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_key(host: str | None) -> str:
    """Whose bucket a client address uses: an IPv4 address, or an IPv6 address's /64 (one subscriber's)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or ""
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def plaintext_refused() -> ApiError:
    return ApiError(
        403,
        "This is a public gateway: it carries only sealed requests (POST /v1/sealed), so that it never "
        "reads a prompt. Use a sealed client (tp_gateway.sealed_client, or the chat page), or run your own "
        "gateway.",
        code="plaintext_refused",
    )


def rate_limited() -> ApiError:
    return ApiError(
        429,
        "Too many sealed requests from this address; retry shortly.",
        code="rate_limited",
        retry_after_s=max(1, round(1 / SEALED_REQUESTS_PER_ADDRESS_RATE_PER_S)),
    )


@dataclass
class PublicPolicy:
    rate_per_s: float = SEALED_REQUESTS_PER_ADDRESS_RATE_PER_S
    burst: int = SEALED_REQUESTS_PER_ADDRESS_BURST
    addresses_max: int = SEALED_RATE_ADDRESSES_MAX
    _buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    def check(self, endpoint: str | None, method: str, client: str | None, now: float) -> ApiError | None:
        """The refusal for a request to `endpoint` from `client` (its address), or None."""
        view = view_of(endpoint)
        if is_loopback_client(client):
            return None
        if view in PLAINTEXT_VIEWS:
            return plaintext_refused()
        if view == "sealed" and method == "POST" and not self._take(address_key(client), now):
            return rate_limited()
        return None

    def _take(self, address: str, now: float) -> bool:
        bucket = self._buckets.pop(address, None) or TokenBucket(self.rate_per_s, self.burst)
        self._buckets[address] = bucket  # most recently seen last
        while len(self._buckets) > self.addresses_max:
            self._buckets.popitem(last=False)
        return bucket.take(now)

    @property
    def addresses(self) -> int:
        return len(self._buckets)
