"""Attacks on directory authorities as a stranger would make them, over real sockets against real tp-relay
authority processes (three, 2-of-3). See tests/adversarial/notes-gwauth.md.

An authority forwards each newly accepted descriptor to the others, but not a forward again. Were any
upload marked `"forwarded": true` believed, one peer could place a descriptor at a single authority (views
that disagree); only an upload carrying another authority's signature over the descriptor counts as one.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import trio

from tests.tp_net.directory_factories import identity, relay_descriptor
from tp_crypto.noise_primitives import generate_keypair
from tp_dev.local_network import local_network
from tp_net.protocol.bootstrap_config import BootstrapAuthority, load_bootstrap
from tp_net.protocol.descriptors import SignedDescriptor, sign_descriptor
from tp_net.protocol.directory import Directory, DirectoryError, Trust, verify_document
from tp_net.trio.directory_client import directory_request, fetch_document
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener
from tp_node.relay import Relay

VIEW_TIMEOUT_S = 40
FORGED_SEED, HONEST_SEED = 7_001, 7_002


def fresh_relay(seed: int, address: str = "ws://127.0.0.1:9/") -> SignedDescriptor:
    """A well-formed, correctly signed descriptor of relay `seed` at `address` (by default nobody runs it:
    its address answers nothing)."""
    who = identity(seed)
    now = int(time.time())
    return sign_descriptor(who, relay_descriptor(who, number=seed, address=address, published=now))


def upload(signed: SignedDescriptor, **extra: object) -> dict[str, object]:
    return {"op": "publish", "descriptor": signed.body, "signature": signed.signature, **extra}


async def test_a_forged_forward_does_not_plant_a_descriptor_at_one_authority(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(
        tmp_path, relay_count=3, authority_count=3, threshold=2, log_level="warning"
    ) as net:
        bootstrap = load_bootstrap(net.bootstrap_file)
        first, *others = bootstrap.authorities
        dialer = WebSocketDialer(nursery)
        # The honest relay runs (an authority admits a relay once its address answered with its id).
        onion_private, _ = generate_keypair()
        running = Relay(identity(HONEST_SEED), [onion_private], dialer=dialer, rng=random.Random(1))
        address = await nursery.start(running.serve, WebSocketListener())
        forged, honest = fresh_relay(FORGED_SEED), fresh_relay(HONEST_SEED, address)

        # The attack: upload to one authority only, claiming to be another authority's forward.
        claims: list[object] = [True, {"authority": others[0].node_id, "signature": bytes(64)}]
        for claim in claims:
            with pytest.raises(DirectoryError, match=r"refused.*other authorities only"):
                await directory_request(dialer, [first.hop()], upload(forged, forwarded=claim))

        # The same upload without the claim reaches the other authorities (the first forwards it, signed).
        await directory_request(dialer, [first.hop()], upload(honest))
        honest_id, forged_id = identity(HONEST_SEED).node_id, identity(FORGED_SEED).node_id
        with trio.fail_after(VIEW_TIMEOUT_S):
            views = [
                await view_listing(dialer, authority, bootstrap.trust(), honest_id) for authority in others
            ]
        for view in views:
            assert forged_id not in view.relays, "the forged upload reached no authority's document"


async def view_listing(
    dialer: WebSocketDialer, authority: BootstrapAuthority, trust: Trust, node_id: bytes
) -> Directory:
    """The authority's served document, once it lists `node_id` (its vote and another's carried it)."""
    while True:
        try:
            document = await fetch_document(dialer, authority.hop())
            directory = verify_document(document, trust, time.time())
            if node_id in directory.relays:
                return directory
        except DirectoryError:
            pass
        await trio.sleep(0.5)
