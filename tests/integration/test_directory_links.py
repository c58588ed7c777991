"""Directory fetches reuse a kept link per source (tp_net.trio.directory_client.KeptLinks): over a real
authority process, three fetches cost one dial, and a kept link that closed is dialed again; a relay's refresh
of its cached document does the same."""

from __future__ import annotations

from pathlib import Path

import trio

from tp_dev.local_network import local_network
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.directory import DirectoryError, SignedDocument
from tp_net.trio.directory_client import KeptLinks, fetch_document
from tp_net.trio.transport import Channel
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.directory_duties import refresh_documents
from tp_node.directory_service import DirectoryService

FETCHES = 3


async def test_fetches_share_one_kept_link_and_a_closed_one_is_dialed_again(tmp_path: Path) -> None:
    async with local_network(tmp_path, relay_count=1, authority_count=1, threshold=1) as net:
        authority = load_bootstrap(net.bootstrap_file).authorities[0].hop()
        async with KeptLinks.open(WebSocketDialer()) as kept:
            fetched = 0
            with trio.fail_after(30):
                while fetched < FETCHES:
                    try:
                        await fetch_document(kept.dialer, authority, kept)
                        fetched += 1
                    except DirectoryError:  # no document yet (the network is starting): the link stays
                        await trio.sleep(0.5)
            assert kept.dials == 1
            link = await kept.link_to(authority)
            await link._pump.aclose()  # the relay's idle limit, or liveness, closed it
            await link.lost.wait()
            await fetch_document(kept.dialer, authority, kept)
            assert kept.dials == 2


class CountingDialer:
    """A WebSocketDialer that counts its dials."""

    def __init__(self) -> None:
        self.inner = WebSocketDialer()
        self.dials = 0

    async def dial(self, address: str) -> Channel:
        self.dials += 1
        return await self.inner.dial(address)


class CountingService(DirectoryService):
    """Counts the documents offered to it (one per fetch that got an answer)."""

    offered = 0

    def offer_document(self, document: SignedDocument) -> bool:
        self.offered += 1
        return super().offer_document(document)


async def test_a_relay_refreshing_its_cached_document_keeps_its_link_to_the_authority(tmp_path: Path) -> None:
    """refresh_documents (what every relay runs) fetches over one kept link, not a fresh one per fetch."""
    async with local_network(tmp_path, relay_count=1, authority_count=1, threshold=1) as net:
        bootstrap = load_bootstrap(net.bootstrap_file)
        service = CountingService(bootstrap.trust())
        dialer = CountingDialer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresh_documents, service, bootstrap, dialer)
            with trio.fail_after(60):
                while service.offered < FETCHES:
                    await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        assert dialer.dials == 1, (dialer.dials, service.offered)
