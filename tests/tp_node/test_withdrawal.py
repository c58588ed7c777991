"""A node (or relay) that stops cleanly withdraws: its last descriptor expires before the next vote, so the
next document (within a period) no longer lists it; one that dies silently drops out within two periods."""

from __future__ import annotations

import trio

from tests.tp_net.directory_factories import NETWORK, PERIOD_S, T0, identity, node_descriptor
from tests.tp_node.test_authority_core import AUTHORITIES, TRUST
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import Descriptor, SignedDescriptor, decode_descriptor, sign_descriptor
from tp_node.authority_core import Admission, AuthorityCore, Schedule
from tp_node.directory_duties import DESCRIPTOR_PERIODS, DescriptorPublisher, descriptor_expiry

BOOTSTRAP = Bootstrap(
    NETWORK, 2, PERIOD_S, tuple(BootstrapAuthority(a.node_id, "ws://127.0.0.1:1/") for a in AUTHORITIES)
)
NODE = identity(3001)


class RecordingPublisher(DescriptorPublisher):
    """Publishes into a list instead of over circuits."""

    sent: list[SignedDescriptor]

    async def _publish_signed(self, signed: SignedDescriptor) -> int:
        await trio.lowlevel.checkpoint()
        self.sent.append(signed)
        return len(self.bootstrap.authorities)


def describe(now: float) -> Descriptor:
    return node_descriptor(NODE, published=int(now), lifetime_s=descriptor_expiry(now, BOOTSTRAP) - int(now))


async def test_a_clean_stop_withdraws_and_the_next_vote_leaves_the_node_out() -> None:
    clock = [float(T0 + 60)]
    publisher = RecordingPublisher(
        NODE,
        BOOTSTRAP,
        None,
        describe,
        lambda a: [],
        wall_clock=lambda: clock[0],
        withdraw_on_stop=True,  # type: ignore[arg-type]
    )
    publisher.sent = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        await publisher.published.wait()
        clock[0] += 5
        nursery.cancel_scope.cancel()
    alive, withdrawal = publisher.sent
    core = AuthorityCore(AUTHORITIES[0], TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    next_period = Schedule.next_after(clock[0], PERIOD_S)
    core.accept(alive, None, clock[0])
    assert len(_voted(core, next_period.period)) == 1, "a live node is in the next vote"
    core.accept(withdrawal, None, clock[0])
    assert _voted(core, next_period.period) == [], "withdrawn: the next document leaves it out"

    # Silent death: the last descriptor lasts DESCRIPTOR_PERIODS periods, so it is out of every vote for a
    # period that starts later than that.
    last = decode_descriptor(alive.body)
    assert last.expires - last.published == DESCRIPTOR_PERIODS * PERIOD_S


def _voted(core: AuthorityCore, period: int) -> list[bytes]:
    from tp_net.protocol.directory import open_vote

    return [d.body for d in open_vote(core.make_vote(period), TRUST).descriptors]


def test_descriptor_lifetime_is_two_periods() -> None:
    assert descriptor_expiry(T0, BOOTSTRAP) == T0 + 2 * PERIOD_S
    assert sign_descriptor(NODE, describe(T0)).open(T0 + 2 * PERIOD_S - 1)
