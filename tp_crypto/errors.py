"""The error tree of token.place.

Protocol errors say who broke the protocol: `RemoteProtocolError` when the peer sent something invalid
(garbage, a failed MAC, a wrong key), `LocalProtocolError` when our own code asked for something invalid.
Library exceptions (msgpack, cryptography, trio_websocket) are translated into these at the edge.
"""

from __future__ import annotations


class TokenPlaceError(Exception):
    """Base class of every error token.place raises on purpose."""


class ProtocolError(TokenPlaceError):
    """A protocol rule was broken; the link or circuit it happened on cannot go on."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (malformed, forged, replayed, too large)."""


class LocalProtocolError(ProtocolError):
    """Our side tried to do something the protocol does not allow in its current state."""


class KeyFileError(TokenPlaceError):
    """A key file is missing, corrupt, or readable by other users."""
