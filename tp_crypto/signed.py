"""Signatures with domain separation: every signed object type has its own prefix, so a signature made for
one kind of document can never be replayed as another."""

from __future__ import annotations

from collections.abc import Callable

from tp_crypto.identity import Identity, verify_signature

DOMAIN_PREFIX = b"token.place signed v1\x00"


def _message(domain: bytes, body: bytes) -> bytes:
    # The NUL after the domain ends it: a domain holding a NUL could collide with another domain's message.
    if not domain or b"\x00" in domain:
        raise ValueError("a signature domain must be non-empty and free of NUL bytes")
    return DOMAIN_PREFIX + domain + b"\x00" + body


def sign(identity: Identity, domain: bytes, body: bytes) -> bytes:
    return identity.sign(_message(domain, body))


def verify(node_id: bytes, domain: bytes, body: bytes, signature: bytes) -> bool:
    return verify_signature(node_id, _message(domain, body), signature)


# What checks a signature: `verify`, or one that gives its answers (a simulator's memoized copy). Code that
# checks signatures takes one as a parameter (tp_net.protocol.directory.Trust.verify) with `verify` the
# default.
Verifier = Callable[[bytes, bytes, bytes, bytes], bool]
