"""The node ids a relay's current directory lists: the peers whose links get the peer CREATE tier and are
never closed as idle (tp_net.rate_limits, tp_net.link_limits). A node id alone is free to mint; being listed
by the authorities is not."""

from __future__ import annotations

import time
from collections.abc import Callable

from tp_net.directory import SignedDocument, verify_document
from tp_net.errors import TokenPlaceError
from tp_node.directory_service import DirectoryService


class ListedPeers:
    """`listed(node_id)`: whether the service's current document lists that relay or GPU node. The document is
    verified once per new document, not per question."""

    def __init__(self, service: DirectoryService, clock: Callable[[], float] = time.time) -> None:
        self._service = service
        self._clock = clock
        self._document: SignedDocument | None = None
        self._ids: frozenset[bytes] = frozenset()

    def __call__(self, node_id: bytes) -> bool:
        document = self._service.current_document()
        if document is None:
            self._document, self._ids = None, frozenset()
        elif self._document is None or document.body != self._document.body:
            self._document, self._ids = document, self._listed_ids(document)
        return node_id in self._ids

    def _listed_ids(self, document: SignedDocument) -> frozenset[bytes]:
        try:
            directory = verify_document(document, self._service.trust, self._clock())
        except TokenPlaceError:
            return frozenset()
        return frozenset(directory.relays) | frozenset(directory.nodes)
