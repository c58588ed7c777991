"""The "directory" service every relay offers: it serves the newest verified directory document. On an
authority it also takes published descriptors, votes and signatures (tp_node.authority_core decides)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import trio

from tp_crypto.errors import RemoteProtocolError, TokenPlaceError
from tp_net.protocol.descriptors import SignedDescriptor
from tp_net.protocol.directory import (
    DirectoryError,
    NewestDocument,
    SignedDocument,
    Trust,
    decode_body,
    verify_document,
)
from tp_net.protocol.errors import ServiceError
from tp_node.authority_core import AuthorityCore

log = logging.getLogger(__name__)

Forward = Callable[[SignedDescriptor, bytes | None], None]
RelayVote = Callable[[bytes, bytes], None]  # (signed vote, its authority): relay to the other authorities
WallClock = Callable[[], float]


class DirectoryService:
    def __init__(
        self,
        trust: Trust,
        *,
        authority: AuthorityCore | None = None,
        forward: Forward | None = None,
        relay_vote: RelayVote | None = None,
        uploaded: Callable[[], None] | None = None,
        wall_clock: WallClock = time.time,
    ) -> None:
        """`uploaded`: called after each accepted upload (an authority's reachability dials may be due)."""
        self.trust = trust
        self._uploaded = uploaded
        self.authority = authority
        self._forward = forward
        self._relay_vote = relay_vote
        self._clock = wall_clock
        self._fetched = NewestDocument(trust)  # the newest document fetched from the authorities
        self._listed_from: SignedDocument | None = None
        self._listed: dict[bytes, str] | None = None
        self._listed_ids: frozenset[bytes] = frozenset()

    def current_document(self) -> SignedDocument | None:
        if self.authority is not None:
            latest = self.authority.latest_document(self._clock())
            if latest is not None:
                return latest
        return self._fetched.document

    def listed_relays(self) -> dict[bytes, str] | None:
        """Node id -> address of each relay the current document lists; None before there is one. What
        this relay may extend to (tp_net.protocol.extend_policy)."""
        self._refresh_listing()
        return self._listed

    def is_listed(self, node_id: bytes) -> bool:
        """Whether the current document lists `node_id` as a relay or GPU node: its links get the peer CREATE
        tier and are never closed as idle (tp_net.protocol.rate_limits, tp_net.protocol.link_limits). A node
        id alone is free to mint; being listed by the authorities is not."""
        self._refresh_listing()
        return node_id in self._listed_ids

    def _refresh_listing(self) -> None:
        """Each document is verified once, when it becomes current; its listing is kept until a newer one
        verifies (an expired listing still says which ids are relays and nodes). Compared by content: an
        authority's current_document is a new object at each call, and verifying it again at every CREATE
        from a peer cost ~0.8 ms (issue 22's build anatomy)."""
        document = self.current_document()
        if document is None or document == self._listed_from:
            return
        self._listed_from = document
        try:
            directory = verify_document(document, self.trust, self._clock())
        except TokenPlaceError as exc:
            log.info("cannot list the peers of the current document: %s", exc.__class__.__name__)
            return
        self._listed = {node_id: relay.address for node_id, relay in directory.relays.items()}
        self._listed_ids = frozenset(directory.relays) | frozenset(directory.nodes)

    def current_valid_after(self) -> int | None:
        """When the document we serve became valid (None: we have none)."""
        document = self.current_document()
        return None if document is None else decode_body(document.body).valid_after

    def offer_document(self, document: SignedDocument) -> bool:
        """Cache a document fetched elsewhere if it verifies and is newer than ours (never an older one)."""
        try:
            return self._fetched.offer(document, self._clock())
        except TokenPlaceError as exc:
            log.warning("refused a directory document: %s", exc)
            return False

    async def handle(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        await trio.lowlevel.checkpoint()
        op = request.get("op")
        if op == "get":
            document = self.current_document()
            if document is None:
                raise ServiceError("no_document", "no directory document yet")
            yield {"document": document.encode()}
            return
        core = self.authority
        if core is None:
            raise ServiceError("not_an_authority", f"operation {op!r} needs an authority")
        try:
            self._authority_op(core, op, request)
        except (DirectoryError, RemoteProtocolError) as exc:  # malformed bytes from the client
            log.info("refused %s: %s", op, exc)
            raise ServiceError("refused", str(exc)) from None
        yield {"ok": True}

    def _authority_op(self, core: AuthorityCore, op: Any, request: Mapping[str, Any]) -> None:
        now = self._clock()
        if op == "publish":
            signed = SignedDescriptor(_bytes(request, "descriptor"), _bytes(request, "signature"))
            invitation = request.get("invitation")
            if invitation is not None and not isinstance(invitation, bytes):
                raise DirectoryError("'invitation' must be bytes")
            # Another authority's forward (not forwarded again) must prove it, before any other work.
            forwarded = request.get("forwarded")
            if forwarded:
                core.check_forward(signed, forwarded)
            accepted = core.accept(signed, invitation, now, forwarded=bool(forwarded))
            if accepted is not None and not forwarded and self._forward is not None:
                self._forward(signed, invitation)
            if self._uploaded is not None:
                self._uploaded()
        elif op == "vote":
            data = _bytes(request, "vote")
            news = core.add_vote(data, now, request.get("relayed"))
            if news is not None and self._relay_vote is not None:
                self._relay_vote(data, news.authority)
        elif op == "signature":
            period = request.get("period")
            if type(period) is not int:
                raise DirectoryError("'period' must be an integer")
            core.add_signature(
                period,
                _bytes(request, "body"),
                _bytes(request, "authority"),
                _bytes(request, "signature"),
                now,
            )
        else:
            raise DirectoryError(f"unknown operation {op!r}")


def _bytes(request: Mapping[str, Any], key: str) -> bytes:
    value = request.get(key)
    if not isinstance(value, bytes):
        raise DirectoryError(f"{key!r} must be bytes")
    return value
