"""Link limits (tp_net.protocol.link_limits): connection counters, the fd-derived cap, the idle rule; and the
listener applying the caps over real sockets."""

from __future__ import annotations

import socket

import pytest
import trio

from tp_net.protocol import link_limits
from tp_net.protocol.cells import CellCommand, handshake_cell
from tp_net.protocol.frames import Frame, Padding, Ping
from tp_net.protocol.link_limits import (
    LINK_CREATE_TURN_COST,
    LINK_TURN_COST_MAX,
    ConnectionCounter,
    LinkLimits,
    fair_turns,
    link_is_idle,
    links_max_for_fds,
    source_key,
)
from tp_net.trio.transport import Channel
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener, parse_ws_address


def test_connections_are_capped_per_address_and_in_all() -> None:
    counter = ConnectionCounter(LinkLimits(links_per_address_max=2, links_max=3))
    assert [counter.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert counter.admit("10.0.0.2")
    assert not counter.admit("10.0.0.3")  # the global cap
    assert (counter.open, counter.refused, counter.from_address("10.0.0.1")) == (3, 2, 2)
    counter.release("10.0.0.1")
    assert counter.admit("10.0.0.1")
    counter.release("10.0.0.2")
    assert counter.from_address("10.0.0.2") == 0 and counter.open == 2


def test_connections_without_an_address_count_only_in_all() -> None:
    counter = ConnectionCounter(LinkLimits(links_per_address_max=1, links_max=2))
    assert [counter.admit(None) for _ in range(3)] == [True, True, False]
    counter.release(None)
    assert counter.open == 1


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("relay.example", "relay.example"),
    ],
)
def test_sources_are_counted_per_ipv4_address_and_per_ipv6_64(host: str, key: str) -> None:
    assert source_key(host) == key


def test_the_link_cap_stays_below_the_fd_limit() -> None:
    assert links_max_for_fds(1024) == 1024 - link_limits.FDS_RESERVED
    assert links_max_for_fds(10**6) == link_limits.LINKS_MAX
    assert links_max_for_fds(10) == 1


@pytest.mark.parametrize("field", ["links_per_address_max", "links_max", "idle_timeout_s"])
def test_bad_limits_are_refused(field: str) -> None:
    with pytest.raises(ValueError):
        LinkLimits(**{field: 0})


def test_a_link_is_idle_without_circuits_or_cells_for_the_timeout_unless_kept() -> None:
    def idle(now: float, circuits: int = 0, kept: bool = False) -> bool:
        return link_is_idle(now=now, last_cell_at=10.0, circuits=circuits, kept=kept, idle_timeout_s=5.0)

    assert not idle(14.9)
    assert idle(15.0)
    assert not idle(100.0, circuits=1)
    assert not idle(100.0, kept=True)


def test_fair_turns_cut_a_message_in_order_by_cost() -> None:
    frames: list[Frame] = [Padding(bytes([i])) for i in range(3 * LINK_TURN_COST_MAX + 1)]
    turns = fair_turns(frames)
    assert [len(turn) for turn in turns] == [LINK_TURN_COST_MAX] * 3 + [1]
    assert [frame for turn in turns for frame in turn] == frames
    assert fair_turns([Ping(1)]) == [[Ping(1)]]
    assert fair_turns([]) == []


def test_a_create_costs_more_of_a_turn() -> None:
    create = handshake_cell(7, CellCommand.CREATE, b"x" * 32)
    creates_per_turn = LINK_TURN_COST_MAX // LINK_CREATE_TURN_COST
    turns = fair_turns([create] * (4 * creates_per_turn))
    assert [len(turn) for turn in turns] == [creates_per_turn] * 4
    # Cheap frames fill what a CREATE leaves of a turn.
    mixed = fair_turns([create, *[Ping(i) for i in range(LINK_TURN_COST_MAX)]])
    assert len(mixed[0]) == 1 + LINK_TURN_COST_MAX - LINK_CREATE_TURN_COST


def _raw_connection(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


async def test_the_listener_closes_connections_past_the_cap_before_any_handshake(
    nursery: trio.Nursery,
) -> None:
    counter = ConnectionCounter(LinkLimits(links_per_address_max=3))
    handled: list[Channel] = []

    async def hold(channel: Channel) -> None:
        handled.append(channel)
        await channel.receive_message()  # until the peer closes it

    address = await nursery.start(WebSocketListener(connections=counter).serve, hold)
    _, port, _ = parse_ws_address(address)
    held = [_raw_connection(port, "127.0.0.2") for _ in range(5)]
    try:
        with trio.fail_after(5):
            while counter.refused < 2:
                await trio.sleep(0.01)
        assert counter.from_address("127.0.0.2") == 3
        # Another address still gets in, through the WebSocket handshake to the handler.
        channel = await WebSocketDialer().dial(address)
        while not handled:
            await trio.sleep(0.01)
        assert getattr(handled[0], "peer_host", None) == "127.0.0.1"
        await channel.aclose()
    finally:
        for sock in held:
            sock.close()
    with trio.fail_after(5):
        while counter.open > 0:
            await trio.sleep(0.01)
