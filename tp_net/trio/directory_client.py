"""Talking to the "directory" service of relays and authorities over short circuits.

Requests travel like any other stream: a client (a gateway, a relay publishing its descriptor, a GPU node
publishing through its home relay) builds a circuit ending at the relay or authority, sends one request
message and reads one answer. Before a client has a directory it uses identity-key handshakes
(HopInfo.onion_key = None) to the authorities named in its bootstrap file.

A role that fetches often passes `KeptLinks`: one link per directory source stays open between requests, so a
fetch costs a circuit build on it, not a TCP, WebSocket and Noise handshake each time (seconds over a lossy
WAN). A kept link that closes (the relay's idle limit, liveness) is dialed again on the next request.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from tp_crypto.errors import TokenPlaceError
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import SignedDescriptor
from tp_net.protocol.directory import (
    Directory,
    DirectoryError,
    NewestDocument,
    SignedDocument,
    Trust,
    verify_document,
)
from tp_net.trio.client import ClientLink
from tp_net.trio.transport import Dialer
from tp_net.trio.trio_util import background_nursery

log = logging.getLogger(__name__)

DIRECTORY_SERVICE = "directory"
DIRECTORY_REQUEST_TIMEOUT_S = 15.0


class KeptLinks:
    """One anonymous link per peer, kept open between requests (while `open` is entered) and reused."""

    def __init__(self, dialer: Dialer) -> None:
        self.dialer = dialer
        self._links: dict[bytes, ClientLink] = {}
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self.dials = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, dialer: Dialer) -> AsyncIterator[KeptLinks]:
        """Kept links for the body's duration; all are closed when it ends."""
        kept = cls(dialer)
        async with background_nursery() as nursery:
            kept._nursery = nursery
            yield kept

    async def link_to(self, hop: HopInfo) -> ClientLink:
        """The open link to `hop`, dialed now if there is none."""
        async with self._lock:
            link = self._links.get(hop.node_id)
            if link is None or link.closed:
                assert self._nursery is not None, "use KeptLinks.open"
                self.dials += 1
                link = await self._nursery.start(self._hold, hop)
                self._links[hop.node_id] = link
            return link

    async def _hold(self, hop: HopInfo, *, task_status: trio.TaskStatus[ClientLink]) -> None:
        async with ClientLink.connect(self.dialer, hop) as link:
            task_status.started(link)
            await link.lost.wait()  # a closed link stays in _links until link_to replaces it


async def directory_request(
    dialer: Dialer,
    path: Sequence[HopInfo],
    request: dict[str, Any],
    *,
    timeout_s: float = DIRECTORY_REQUEST_TIMEOUT_S,
    kept: KeptLinks | None = None,
) -> dict[str, Any]:
    """Send one request to the directory service at the end of `path` (on a kept link when `kept` is
    given); its answer, or DirectoryError."""
    reply: Any = None
    try:
        with trio.fail_after(timeout_s):
            if kept is not None:
                reply = await _request_on(await kept.link_to(path[0]), path, request)
            else:
                async with ClientLink.connect(dialer, path[0]) as link:
                    reply = await _request_on(link, path, request)
    except trio.TooSlowError:
        raise DirectoryError(f"directory request timed out after {timeout_s} s") from None
    return _answer(reply)


def _answer(reply: Any) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise DirectoryError("directory service gave no answer")
    error = reply.get("error")
    if isinstance(error, dict):
        raise DirectoryError(f"directory service refused: {error.get('code')}: {error.get('message')}")
    return reply


async def _request_on(link: ClientLink, path: Sequence[HopInfo], request: dict[str, Any]) -> Any:
    """The last message the directory service answers `request` with, on a new circuit over `link`."""
    reply: Any = None
    circuit = await link.build_circuit(path)
    try:
        async for message in circuit.request(DIRECTORY_SERVICE, request):
            reply = message
    finally:
        circuit.destroy()
    return reply


async def fetch_document(dialer: Dialer, hop: HopInfo, kept: KeptLinks | None = None) -> SignedDocument:
    return _document_of(await directory_request(dialer, [hop], {"op": "get"}, kept=kept))


def _document_of(reply: dict[str, Any]) -> SignedDocument:
    document = reply.get("document")
    if not isinstance(document, bytes):
        raise DirectoryError("directory answer carries no document")
    return SignedDocument.decode(document)


async def fetch_from_guards(
    guards: Sequence[tuple[ClientLink, HopInfo]],
    held: NewestDocument,
    rng: random.Random,
    now: float,
    *,
    timeout_s: float = DIRECTORY_REQUEST_TIMEOUT_S,
) -> Directory | None:
    """Directory guards (as Tor's): ask the relay at the end of each open link (in random order) for the
    document it caches, on a one-hop circuit over that link, so no authority sees the client. The held
    directory once one gives a document that verifies and is not older than held (the client checks the
    signatures itself); None when none does (then the caller asks the authorities)."""
    for link, hop in rng.sample(list(guards), len(guards)):
        try:
            with trio.fail_after(timeout_s):
                reply = _answer(await _request_on(link, [hop], {"op": "get"}))
            held.offer(_document_of(reply), now)
        except (TokenPlaceError, trio.TooSlowError) as exc:
            log.info("no directory from guard %s: %s", hop.address, exc.__class__.__name__)
        else:
            return held.directory
    return None


async def fetch_directory(
    dialer: Dialer,
    sources: Sequence[HopInfo],
    trust: Trust,
    rng: random.Random,
    now: float,
    *,
    kept: KeptLinks | None = None,
    held: NewestDocument | None = None,
) -> tuple[Directory, SignedDocument]:
    """A verified directory from the first of `sources` (tried in random order) that gives one. With
    `held`, the newest document it holds after offering each (a source answering with an older one than
    held is a rollback: refused, and the next source is asked)."""
    problems = []
    for hop in rng.sample(list(sources), len(sources)):
        try:
            return _take(await fetch_document(dialer, hop, kept), trust, now, held)
        except TokenPlaceError as exc:
            log.info("no directory from %s: %s", hop.address, exc)
            problems.append(str(exc))
    raise DirectoryError("no source gave a valid directory: " + "; ".join(problems))


def _take(
    document: SignedDocument, trust: Trust, now: float, held: NewestDocument | None
) -> tuple[Directory, SignedDocument]:
    if held is None:
        return verify_document(document, trust, now), document
    held.offer(document, now)
    assert held.directory is not None and held.document is not None
    return held.directory, held.document


async def publish_descriptor(
    dialer: Dialer, path: Sequence[HopInfo], signed: SignedDescriptor, invitation: bytes | None
) -> None:
    request = {
        "op": "publish",
        "descriptor": signed.body,
        "signature": signed.signature,
        "invitation": invitation,
    }
    await directory_request(dialer, path, request)
