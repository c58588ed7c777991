"""Errors of the network layer, on top of the protocol errors of tp_crypto.errors.

Transport libraries' exceptions never leave the transport modules: they become these.
"""

from __future__ import annotations

from tp_crypto.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TokenPlaceError,
)

__all__ = [
    "ChannelClosed",
    "DialError",
    "HandshakeTimeout",
    "LinkClosed",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "ServiceError",
    "TokenPlaceError",
    "TransportError",
    "WrongPeerError",
]


class TransportError(TokenPlaceError):
    """A transport could not carry a message."""


class DialError(TransportError):
    """Connecting to an address failed (refused, unreachable, rejected, timed out)."""


class ChannelClosed(TransportError):
    """The message channel is closed (by either side, or because the connection broke)."""


class HandshakeTimeout(TransportError):
    """The link handshake did not finish in time."""


class LinkClosed(TransportError):
    """The encrypted link is closed; `reason` is the close reason code when the peer sent one."""

    def __init__(self, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class WrongPeerError(RemoteProtocolError):
    """The node that answered at an address is not the one we dialed (`answered` is None: it sent no id)."""

    def __init__(self, expected: bytes, answered: bytes | None) -> None:
        who = answered.hex() if answered else "an anonymous peer"
        super().__init__(
            f"the node at this address is {who}, not the node it was expected to be ({expected.hex()})"
        )
        self.expected = expected
        self.answered = answered


class ServiceError(Exception):
    """A request the service refuses; `code` is machine-readable, the message safe to show the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
