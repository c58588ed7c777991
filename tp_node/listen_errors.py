"""A listener that cannot start names its address, what it listens for and the flag that moves it."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from tp_crypto.errors import TokenPlaceError
from tp_net.trio.trio_util import sole_exception


class ListenError(TokenPlaceError):
    """A listener could not start (address taken, not this machine's, not allowed)."""


_HINTS = {
    errno.EADDRINUSE: "another process is listening there: stop it, or give {flag} another port",
    errno.EADDRNOTAVAIL: "this machine has no such address: give {flag} 0.0.0.0 or one of its own",
    errno.EACCES: "ports below 1024 need privileges: give {flag} a port of 1024 or more",
}


@contextmanager
def naming_listener(what: str, flag: str, host: str, port: int) -> Iterator[None]:
    """An OSError raised inside (alone, or alone in exception groups) becomes a ListenError that says
    `cannot listen for WHAT on HOST:PORT (FLAG): REASON; WHAT TO DO`."""
    try:
        yield
    except (OSError, BaseExceptionGroup) as exc:
        error = sole_exception(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if not isinstance(error, OSError):
            raise
        hint = _HINTS.get(error.errno or 0, "check {flag}").format(flag=flag)
        reason = error.strerror or str(error)
        raise ListenError(f"cannot listen for {what} on {host}:{port} ({flag}): {reason}; {hint}") from exc
