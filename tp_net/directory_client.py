"""Talking to the "directory" service of relays and authorities over short circuits.

Requests travel like any other stream: a client (a gateway, a relay publishing its descriptor, a GPU node
publishing through its home relay) builds a circuit ending at the relay or authority, sends one request
message and reads one answer. Before a client has a directory it uses identity-key handshakes
(HopInfo.onion_key = None) to the authorities named in its bootstrap file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import trio

from tp_crypto.errors import TokenPlaceError
from tp_net.circuit_client import HopInfo
from tp_net.client import ClientLink
from tp_net.descriptors import SignedDescriptor
from tp_net.directory import Directory, DirectoryError, SignedDocument, Trust, verify_document
from tp_net.transport import Dialer

log = logging.getLogger(__name__)

DIRECTORY_SERVICE = "directory"
DIRECTORY_REQUEST_TIMEOUT_S = 15.0


async def directory_request(
    dialer: Dialer,
    path: Sequence[HopInfo],
    request: dict[str, Any],
    *,
    timeout_s: float = DIRECTORY_REQUEST_TIMEOUT_S,
) -> dict[str, Any]:
    """Send one request to the directory service at the end of `path`; its answer, or DirectoryError."""
    reply: Any = None
    try:
        with trio.fail_after(timeout_s):
            async with ClientLink.connect(dialer, path[0]) as link:
                circuit = await link.build_circuit(path)
                async for message in circuit.request(DIRECTORY_SERVICE, request):
                    reply = message
                circuit.destroy()
    except trio.TooSlowError:
        raise DirectoryError(f"directory request timed out after {timeout_s} s") from None
    if not isinstance(reply, dict):
        raise DirectoryError("directory service gave no answer")
    error = reply.get("error")
    if isinstance(error, dict):
        raise DirectoryError(f"directory service refused: {error.get('code')}: {error.get('message')}")
    return reply


async def fetch_document(dialer: Dialer, hop: HopInfo) -> SignedDocument:
    reply = await directory_request(dialer, [hop], {"op": "get"})
    document = reply.get("document")
    if not isinstance(document, bytes):
        raise DirectoryError("directory answer carries no document")
    return SignedDocument.decode(document)


async def fetch_directory(
    dialer: Dialer, sources: Sequence[HopInfo], trust: Trust, rng: random.Random, now: float
) -> tuple[Directory, SignedDocument]:
    """A verified directory from the first of `sources` (tried in random order) that gives one."""
    problems = []
    for hop in rng.sample(list(sources), len(sources)):
        try:
            document = await fetch_document(dialer, hop)
            return verify_document(document, trust, now), document
        except TokenPlaceError as exc:
            log.info("no directory from %s: %s", hop.address, exc)
            problems.append(str(exc))
    raise DirectoryError("no source gave a valid directory: " + "; ".join(problems))


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
