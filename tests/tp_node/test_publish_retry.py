"""A network's start, where processes come up in any order: a relay or node that published before the
authorities were up publishes again within seconds, not half a period later. (README.md's own-network test
once failed 1 run in 5 for it: the GPU node's home relay started first, every publish failed, and neither it
nor its node was listed for the 150 s until its next publish.)"""

from __future__ import annotations

import trio

from tests.tp_net.directory_factories import NETWORK, PERIOD_S, T0
from tests.tp_node.test_authority_core import AUTHORITIES
from tests.tp_node.test_withdrawal import NODE, describe
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import SignedDescriptor
from tp_node.directory_duties import (
    PUBLISH_RETRY_S,
    DescriptorPublisher,
    publish_delay_s,
    republish_interval_s,
)

BOOTSTRAP = Bootstrap(
    NETWORK, 2, PERIOD_S, tuple(BootstrapAuthority(a.node_id, "ws://127.0.0.1:1/") for a in AUTHORITIES)
)
START = T0 + 1


def wall_clock() -> float:
    return START + trio.current_time()


class ScriptedPublisher(DescriptorPublisher):
    """Each publish reaches as many authorities as the script says (then all), at the times it records."""

    script: list[int]
    times: list[float]

    async def _publish_signed(self, signed: SignedDescriptor) -> int:
        await trio.lowlevel.checkpoint()
        self.times.append(trio.current_time())
        return self.script.pop(0) if self.script else len(self.bootstrap.authorities)


def test_publish_delay_doubles_from_the_retry_to_the_republish_interval() -> None:
    interval = republish_interval_s(BOOTSTRAP)
    assert publish_delay_s(0, BOOTSTRAP) == interval
    assert [publish_delay_s(n, BOOTSTRAP) for n in (1, 2, 3)] == [PUBLISH_RETRY_S * f for f in (1, 2, 4)]
    assert publish_delay_s(1_000, BOOTSTRAP) == interval


async def test_a_publish_the_authorities_missed_is_retried_within_seconds(
    autojump_clock: trio.abc.Clock,
) -> None:
    publisher = ScriptedPublisher(NODE, BOOTSTRAP, None, describe, lambda a: [], wall_clock=wall_clock)  # type: ignore[arg-type]
    publisher.script, publisher.times = [0, 1], []  # none up yet; one of three; then all
    with trio.move_on_after(republish_interval_s(BOOTSTRAP) + 10):
        await publisher.run()
    first, second, third, fourth = publisher.times
    assert second - first == PUBLISH_RETRY_S, "nobody accepted: again after PUBLISH_RETRY_S"
    assert third - second == 2 * PUBLISH_RETRY_S, "still missed by some: the wait doubles"
    assert fourth - third == republish_interval_s(BOOTSTRAP), "all accepted: the normal interval"
