"""Two OS processes complete a link handshake over real WebSockets on 127.0.0.1 and exchange frames."""

from __future__ import annotations

import trio

from benchmarks.linkbench import SEND_BATCH_FRAMES, numbered_padding
from tp_crypto.identity import Identity
from tp_dev.processes import python_process
from tp_net.protocol.frames import Frame, Ping, Pong
from tp_net.trio.link_trio import dial_link
from tp_net.trio.transport_ws import WebSocketDialer

FRAME_COUNT = 10_000


def body_of(index: int) -> bytes:
    return b"%d" % index * (1 + index % 64)


async def test_ten_thousand_frames_cross_two_processes_in_order(nursery: trio.Nursery) -> None:
    async with python_process(["benchmarks.linkbench", "serve", "--echo"]) as server:
        address = server.announcement["address"]
        assert address.startswith("ws://127.0.0.1:")
        node_id = bytes.fromhex(server.announcement["node_id"])
        link = await dial_link(
            WebSocketDialer(nursery),
            address,
            expected_peer_id=node_id,
            identity=Identity.generate(),
        )
        sent = [numbered_padding(i, body_of(i)) for i in range(FRAME_COUNT)]

        async def send_all() -> None:
            for first in range(0, FRAME_COUNT, SEND_BATCH_FRAMES):
                await link.send(sent[first : first + SEND_BATCH_FRAMES])
            await link.send([Ping(7)])

        nursery.start_soon(send_all)
        received: list[Frame] = []
        with trio.fail_after(60):
            while not received or not isinstance(received[-1], Pong):
                received.extend(await link.receive())
        assert received[:-1] == sent
        assert received[-1] == Pong(FRAME_COUNT)
        await link.aclose()
