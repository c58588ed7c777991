"""A byzantine authority against two real tp-relay authority processes (2 of 3), over real sockets.

The test stops the third authority's process and plays it with its real key: each period it plants a
descriptor at the first authority only (a genuine forward, signed by itself), sends the first authority a
vote carrying it and the second a different vote without it (equivocation: before votes were relayed and
equivocators left out, the two honest authorities built different documents and neither reached 2
signatures), and sends both garbage signatures and a signature over a document of its own. The honest two
must still sign one document every period. The logic, move by move, is in test_directory_byzantine.py.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import trio

from tests.tp_net.directory_factories import identity, relay_descriptor
from tp_crypto.identity import Identity, load_key_file
from tp_dev.local_network import local_network
from tp_net.protocol.bootstrap_config import BootstrapAuthority, load_bootstrap
from tp_net.protocol.descriptors import SignedDescriptor, sign_descriptor
from tp_net.protocol.directory import (
    DirectoryError,
    DocumentBody,
    Trust,
    Vote,
    sign_document,
    sign_vote,
    verify_document,
)
from tp_net.trio.directory_client import directory_request, fetch_document
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.authority_core import Admission, AuthorityCore, Schedule

ATTACKED_PERIODS = 4
PLANTED_SEED_BASE = 7_100
FETCH_GRACE_S = 0.6  # after a period starts, when the test asks each honest authority for its document


def planted(number: int, now: float) -> SignedDescriptor:
    who = identity(PLANTED_SEED_BASE + number)
    descriptor = relay_descriptor(who, number=number, address="ws://127.0.0.1:9/", published=int(now))
    return sign_descriptor(who, descriptor)


async def quietly(dialer: WebSocketDialer, hop: BootstrapAuthority, request: dict[str, object]) -> None:
    """Send as the byzantine authority would: refusals are expected."""
    with contextlib.suppress(DirectoryError):
        await directory_request(dialer, [hop.hop()], request)


async def attack_period(
    dialer: WebSocketDialer, byzantine: AuthorityCore, honest: list[BootstrapAuthority], schedule: Schedule
) -> None:
    first, second = honest
    network, period = byzantine.trust.network, schedule.period
    signed = planted(period % 1000, time.time())
    forward = {
        "op": "publish",
        "descriptor": signed.body,
        "signature": signed.signature,
        "forwarded": byzantine.forward_proof(signed),
    }
    await quietly(dialer, first, forward)  # at the first authority only
    await trio.sleep(max(0.0, schedule.vote_at + 0.05 - time.time()))
    who = byzantine.identity
    with_it = sign_vote(who, Vote(network, period, who.node_id, (signed,)))
    without = sign_vote(who, Vote(network, period, who.node_id, ()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(quietly, dialer, first, {"op": "vote", "vote": with_it})
        nursery.start_soon(quietly, dialer, second, {"op": "vote", "vote": without})
    await trio.sleep(max(0.0, schedule.sign_at - time.time()))
    own = DocumentBody(network, period, period + 4, period + 12, ()).encode()
    for target in honest:
        for body, signature in ((own, bytes(64)), (own, sign_document(who, own))):
            request = {
                "op": "signature",
                "period": period,
                "body": body,
                "authority": who.node_id,
                "signature": signature,
            }
            await quietly(dialer, target, request)


async def served_period(
    dialer: WebSocketDialer, hop: BootstrapAuthority, trust: Trust
) -> tuple[int | None, int]:
    """(valid_after, number of signers) of the document `hop` serves; (None, 0) when it has none."""
    try:
        directory = verify_document(await fetch_document(dialer, hop.hop()), trust, time.time())
    except DirectoryError:
        return None, 0
    return directory.valid_after, len(directory.signers)


async def test_an_equivocating_authority_does_not_stop_the_directory(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(
        tmp_path, relay_count=4, authority_count=3, threshold=2, log_level="warning"
    ) as net:
        bootstrap = load_bootstrap(net.bootstrap_file)
        *honest, third = bootstrap.authorities
        net.relays[2].process.terminate()  # the byzantine authority takes its place, with its key
        await net.relays[2].process.wait()
        key: Identity = load_key_file(net.bootstrap_file.parent / "authority-3" / "identity.key")
        assert key.node_id == third.node_id
        trust = bootstrap.trust()
        byzantine = AuthorityCore(key, trust, period_s=bootstrap.period_s, admission=Admission.OPEN)
        dialer = WebSocketDialer(nursery)
        decided = []
        for _ in range(ATTACKED_PERIODS):
            schedule = Schedule.next_after(time.time(), bootstrap.period_s)
            await attack_period(dialer, byzantine, honest, schedule)
            await trio.sleep(max(0.0, schedule.period + FETCH_GRACE_S - time.time()))
            served = [await served_period(dialer, hop, trust) for hop in honest]
            decided.append((schedule.period, served))
        for period, served in decided:
            assert served == [(period, 2), (period, 2)], f"period {period}: served {served}"
