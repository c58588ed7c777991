"""Relay addresses: the one validator of `ws://HOST:PORT/PATH`, and which hosts count as private.

Everything that takes an address from elsewhere checks it here before anything parses it further: descriptor
validation (tp_net.protocol.descriptors), the WebSocket dialer (tp_net.trio.transport_ws), a relay extending a
circuit (tp_net.protocol.extend_policy). A valid address is plain printable ASCII, so no later step (IDNA, the
HTTP request line) can fail on it. Pure functions, no I/O: a host name is never resolved here.
"""

from __future__ import annotations

import ipaddress
import string
import urllib.parse
from dataclasses import dataclass

from tp_crypto.errors import TokenPlaceError

ADDRESS_LENGTH_MAX = 256  # characters of a whole ws:// URL
HOSTNAME_LENGTH_MAX = 253  # characters of a DNS name (RFC 1035)
HOST_LABEL_LENGTH_MAX = 63  # characters of one DNS label
PORT_MAX = 65535

_URL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
_LABEL_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + "-")


class AddressError(TokenPlaceError):
    """An address is not a valid `ws://HOST:PORT/PATH` URL; the message is the reason, to follow
    "address ..." (it never holds the address)."""


@dataclass(frozen=True)
class RelayAddress:
    host: str  # lowercase DNS name or IP literal (IPv6 without brackets)
    port: int
    path: str  # starts with "/"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def url(self, path: str | None = None) -> str:
        """The address as a URL, with `path` instead of its own when given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.path if path is None else path}"


def parse_address(address: str) -> RelayAddress:
    """The parts of a `ws://HOST:PORT/PATH` URL; AddressError when it is not one.

    HOST is an IPv4 or IPv6 literal (no zone) or a DNS name of ASCII letters, digits and hyphens whose last
    label starts with a letter (so "127.1" or "0x7f.1", which resolvers read as IPv4, are refused); PORT is
    1..65535; PATH (default "/") has no query or fragment."""
    if not isinstance(address, str) or not 0 < len(address) <= ADDRESS_LENGTH_MAX:
        raise AddressError(f"is not 1..{ADDRESS_LENGTH_MAX} characters long")
    if not set(address) <= _URL_CHARACTERS:
        raise AddressError("is not printable ASCII without spaces")
    try:
        parts = urllib.parse.urlsplit(address)
        port = parts.port
        hostname = parts.hostname
    except ValueError:  # an unclosed "[", a port that is not a number or out of range
        raise AddressError("has an invalid host or port") from None
    if parts.scheme != "ws":
        raise AddressError("is not a ws:// URL")
    if parts.username is not None or parts.query or parts.fragment or "#" in address or "?" in address:
        raise AddressError("has a user, query or fragment")
    if not hostname or port is None:
        raise AddressError("needs a host and a port")
    if not 1 <= port <= PORT_MAX:
        raise AddressError("needs a non-zero port")
    path = parts.path or "/"
    if not path.startswith("/"):
        raise AddressError("has a path that does not start with /")
    _check_host(hostname, bracketed=parts.netloc.startswith("["))
    return RelayAddress(hostname, port, path)


def _check_host(host: str, *, bracketed: bool) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if "%" in host:
            raise AddressError("has an IPv6 zone")
        if bracketed != (ip.version == 6):
            raise AddressError("has an IPv6 host without brackets or an IPv4 host in them")
        return
    if bracketed or "%" in host:
        raise AddressError("has a bracketed host that is not an IPv6 literal")
    labels = host.split(".")
    if len(host) > HOSTNAME_LENGTH_MAX or not all(_is_label(label) for label in labels):
        raise AddressError("has a host name that is not dot-separated labels of letters, digits and hyphens")
    if not labels[-1][0].isalpha():
        raise AddressError("has a host name whose last label does not start with a letter")


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= HOST_LABEL_LENGTH_MAX
        and set(label) <= _LABEL_CHARACTERS
        and not label.startswith("-")
        and not label.endswith("-")
    )


def is_private_host(host: str) -> bool:
    """True for hosts a relay must not dial outside a `local` network (Tor's ExtendAllowPrivateAddresses):
    loopback, link-local, private, shared, multicast, unspecified or reserved IPs, and "localhost" names.
    Any other host name counts as public here (no DNS in this module)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        return name == "localhost" or name.endswith(".localhost")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified
