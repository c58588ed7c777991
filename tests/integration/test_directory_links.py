"""Directory fetches reuse a kept link per source (tp_net.directory_client.KeptLinks): over a real authority
process, three fetches cost one dial, and a kept link that closed is dialed again."""

from __future__ import annotations

from pathlib import Path

import trio

from tp_dev.local_network import local_network
from tp_net.bootstrap_config import load_bootstrap
from tp_net.directory import DirectoryError
from tp_net.directory_client import KeptLinks, fetch_document
from tp_net.transport_ws import WebSocketDialer

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
