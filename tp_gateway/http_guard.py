"""Which web pages may use the gateway, sans-IO: the Host, Origin and Content-Type rules and the CORS answer.

A browser lets any site send a "simple" cross-site request (a form or a `text/plain` fetch) and, after DNS
rebinding (an attacker's name that resolves to 127.0.0.1), read the answers as its own. So the gateway
answers only requests whose Host is an address it serves (loopback names with its port, the local address
the connection arrived on, names the operator adds), refuses an Origin other than its own unless the
operator allows it (and only then sends CORS headers), and reads a POST body only when it is declared
`application/json`, which no simple cross-site request can be.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tp_gateway.openai_errors import ApiError, shown

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_HTTP_PORT = 80
JSON_MEDIA_TYPE = "application/json"
HOST_SHOWN_CHARS_MAX = 64
# The preflight answer for allowed origins: what the API uses, cached by the browser this long.
CORS_METHODS = "GET, POST"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = 600


def _host_part(authority: str) -> str:
    """The host of a Host value: "name:port" gives "name", "[::1]:80" gives "[::1]"."""
    if authority.startswith("["):
        return authority.partition("]")[0] + "]"
    return authority.rpartition(":")[0] if ":" in authority else authority


def _url_host(host: str) -> str:
    """A host as it appears in a Host header: an IPv6 literal in brackets."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower()
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def is_loopback(host: str) -> bool:
    """Whether a listen host reaches only this machine ("localhost" or a loopback address literal)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_argument(text: str) -> str:
    """An origin the operator allows: http(s)://HOST[:PORT], nothing else (no path, no "*", no "null")."""
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or "@" in parts.netloc
        or text.rstrip("/") != (f"{parts.scheme}://{parts.netloc}")
    ):
        raise ValueError(f"{text!r} is not an origin like https://app.example.com[:PORT]")
    return f"{parts.scheme}://{parts.netloc.lower()}"


@dataclass(frozen=True)
class SiteRules:
    """The addresses a gateway serves and the origins it lets other sites' pages use it from.

    `hosts`: Host values served besides loopback and the connection's local address: "NAME" matches
    NAME with any port or none (e.g. behind a reverse proxy on 443), "NAME:PORT" exactly that.
    `cors_origins`: origins whose pages may call the API (they get CORS headers); every other
    cross-origin request is refused.
    """

    hosts: frozenset[str] = frozenset()
    cors_origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> SiteRules:
        return cls(frozenset(_url_host_port(h) for h in hosts), frozenset(cors_origins))

    def host_allowed(self, host: str, local_address: tuple[str, int | None] | None) -> bool:
        """Whether a request's Host header names this gateway; `local_address` is where it arrived."""
        host = host.strip().lower()
        if not host:
            return False
        if host in self.hosts or _host_part(host) in self.hosts:
            return True
        if local_address is None:
            return False
        local_host, port = local_address[0], local_address[1] or DEFAULT_HTTP_PORT
        names = [*LOOPBACK_NAMES]
        if is_address(local_host):
            names.append(_url_host(local_host))
        served = {f"{name}:{port}" for name in names}
        if port == DEFAULT_HTTP_PORT:
            served.update(names)
        return host in served

    def origin_allowed(self, origin: str | None, host: str) -> bool:
        """No Origin (not a cross-site browser request), the gateway's own, or one the operator allows."""
        if origin is None:
            return True
        origin = origin.strip().lower()
        own = {f"http://{host.strip().lower()}", f"https://{host.strip().lower()}"}
        return origin in own or origin in self.cors_origins

    def cors_headers(self, origin: str | None, *, preflight: bool) -> dict[str, str]:
        """CORS response headers for an allowed foreign origin; none for everyone else."""
        if origin is None or origin.strip().lower() not in self.cors_origins:
            return {}
        headers = {"Access-Control-Allow-Origin": origin.strip().lower(), "Vary": "Origin"}
        if preflight:
            headers["Access-Control-Allow-Methods"] = CORS_METHODS
            headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        return headers


def _url_host_port(text: str) -> str:
    host = _host_part(text.strip())
    return _url_host(host) + text.strip()[len(host) :].lower()


def is_address(host: str) -> bool:
    """Whether `host` is an IP address literal (with or without IPv6 brackets)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type declares JSON ("application/json", any parameters, any case)."""
    return (content_type or "").partition(";")[0].strip().lower() == JSON_MEDIA_TYPE


def misdirected(host: str) -> ApiError:
    return ApiError(
        421,
        f"This gateway does not serve the host '{shown(host, HOST_SHOWN_CHARS_MAX)}'; its operator can "
        "add the name with --allow-host.",
        code="host_not_allowed",
    )


def origin_refused() -> ApiError:
    return ApiError(
        403,
        "Requests from this origin are not allowed; the gateway's operator can allow it with --cors-origin.",
        code="origin_not_allowed",
    )


def not_json() -> ApiError:
    return ApiError(
        415,
        "The request body must be JSON, sent with the header Content-Type: application/json.",
        code="unsupported_media_type",
    )
