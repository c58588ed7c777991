"""Link liveness decisions (tp_net.protocol.liveness) on a fake clock: Ping after a silence, dead at the
deadline."""

from __future__ import annotations

import pytest

from tp_net.protocol.liveness import (
    LINK_KEEPALIVE_IDLE_S,
    LINK_SILENCE_DEADLINE_S,
    LinkLiveness,
    LivenessAction,
    LivenessLimits,
)

IDLE = LINK_KEEPALIVE_IDLE_S
DEADLINE = LINK_SILENCE_DEADLINE_S


def test_a_talking_link_is_left_alone() -> None:
    liveness = LinkLiveness(0.0)
    for second in range(100):
        liveness.received(float(second))
        assert liveness.poll(second + 0.5) is LivenessAction.WAIT
    assert liveness.pings_sent == 0


def test_silence_brings_one_ping_per_keepalive_period_then_death() -> None:
    liveness = LinkLiveness(0.0)
    assert liveness.poll(IDLE - 0.01) is LivenessAction.WAIT
    assert liveness.next_check_at() == IDLE
    assert liveness.poll(IDLE) is LivenessAction.PING
    assert liveness.ping_sent(IDLE) == 1
    assert liveness.poll(IDLE + 0.5) is LivenessAction.WAIT  # one Ping per period, not one per poll
    assert liveness.next_check_at() == 2 * IDLE
    assert liveness.poll(2 * IDLE) is LivenessAction.PING
    assert liveness.ping_sent(2 * IDLE) == 2
    assert liveness.poll(DEADLINE - 0.01) in (LivenessAction.WAIT, LivenessAction.PING)
    assert liveness.poll(DEADLINE) is LivenessAction.DEAD


def test_an_answer_of_any_kind_resets_the_deadline() -> None:
    liveness = LinkLiveness(0.0)
    assert liveness.poll(IDLE) is LivenessAction.PING
    liveness.ping_sent(IDLE)
    liveness.received(IDLE + 0.1)  # the Pong, a cell: anything
    assert liveness.poll(DEADLINE) is not LivenessAction.DEAD
    assert liveness.poll(IDLE + 0.1 + DEADLINE) is LivenessAction.DEAD


def test_the_deadline_is_never_later_than_the_next_check() -> None:
    liveness = LinkLiveness(0.0, LivenessLimits(keepalive_idle_s=4.0, silence_deadline_s=6.0))
    liveness.ping_sent(4.0)
    assert liveness.next_check_at() == 6.0
    assert liveness.poll(6.0) is LivenessAction.DEAD


def test_limits_must_leave_room_for_a_ping() -> None:
    with pytest.raises(ValueError):
        LivenessLimits(keepalive_idle_s=10.0, silence_deadline_s=10.0)
    with pytest.raises(ValueError):
        LivenessLimits(keepalive_idle_s=0.0)


def test_woken_at_the_next_check_it_never_waits_again() -> None:
    """Float sums: 0.1 + 5.0 - 0.1 < 5.0. A poll at next_check_at() must act, or a caller on a virtual clock
    (the simulator) would spin at that instant for ever."""
    # Times where (t + IDLE) - t < IDLE in binary floating point (found by search).
    awkward = [t for t in (254.8055718451292, 8189.035009917622, 32764.378511647275) if (t + IDLE) - t < IDLE]
    assert awkward
    for received_at in awkward:
        liveness = LinkLiveness(received_at)
        for _ in range(4):
            now = liveness.next_check_at()
            action = liveness.poll(now)
            assert action is not LivenessAction.WAIT, (received_at, now)
            if action is LivenessAction.DEAD:
                break
            liveness.ping_sent(now)
