"""The in-memory transport: channels are pairs of trio memory channels; addresses are names.

Used by unit tests and the simulator, where the same node code must run without sockets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from tp_net.protocol.errors import ChannelClosed, DialError, LocalProtocolError, TokenPlaceError
from tp_net.trio.transport import CHANNEL_MESSAGE_BYTES_MAX, Channel, ChannelHandler

# Messages buffered per direction before a sender waits (the memory analogue of socket buffers).
MEMORY_CHANNEL_BUFFER_MESSAGES = 64


# What one direction of a channel carries: (when the message may be received, on trio's clock; the message).
Timed = tuple[float, bytes]


class MemoryChannel:
    """One end of an in-memory channel. Messages arrive at once; a link model (the simulator's latency and
    bandwidth) subclasses it and says when each one arrives (`arrival_time`) and hears of each delivery
    (`delivered`)."""

    def __init__(
        self,
        outbound: trio.MemorySendChannel[Timed],
        inbound: trio.MemoryReceiveChannel[Timed],
        *,
        message_bytes_max: int = CHANNEL_MESSAGE_BYTES_MAX,
    ) -> None:
        self._outbound = outbound
        self._inbound = inbound
        self._message_bytes_max = message_bytes_max

    def arrival_time(self, message: bytes) -> float:
        """When a message sent now may be received (trio time); called once per message, in order."""
        return -math.inf

    def delivered(self, message: bytes) -> None:
        """A message was received at this end."""

    async def send_message(self, message: bytes) -> None:
        if len(message) > self._message_bytes_max:
            raise LocalProtocolError(f"message of {len(message)} bytes exceeds {self._message_bytes_max}")
        try:
            await self._outbound.send((self.arrival_time(message), bytes(message)))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ChannelClosed("in-memory channel is closed") from exc

    async def receive_message(self) -> bytes:
        try:
            arrives, message = await self._inbound.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise ChannelClosed("in-memory channel is closed") from exc
        if arrives > trio.current_time():
            await trio.sleep_until(arrives)
        self.delivered(message)
        return message

    def close(self) -> None:
        """Close both directions of this end at once (the peer sees the channel end)."""
        self._outbound.close()
        self._inbound.close()

    async def aclose(self) -> None:
        # Close both ends before the checkpoint, so a cancelled caller still closes the channel.
        self.close()
        await trio.lowlevel.checkpoint()


def memory_channel_pair(
    buffer_messages: int = MEMORY_CHANNEL_BUFFER_MESSAGES,
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected channel ends."""
    a_to_b_send, a_to_b_receive = trio.open_memory_channel[Timed](buffer_messages)
    b_to_a_send, b_to_a_receive = trio.open_memory_channel[Timed](buffer_messages)
    return MemoryChannel(a_to_b_send, b_to_a_receive), MemoryChannel(b_to_a_send, a_to_b_receive)


_Acceptor = Callable[[Channel], None]


class MemoryNetwork:
    """Addresses to listeners, for one test or one simulation."""

    def __init__(self, *, buffer_messages: int = MEMORY_CHANNEL_BUFFER_MESSAGES) -> None:
        self._acceptors: dict[str, _Acceptor] = {}
        self._buffer_messages = buffer_messages

    def listener(self, address: str) -> MemoryListener:
        return MemoryListener(self, address)

    def dialer(self) -> MemoryDialer:
        return MemoryDialer(self)

    def hand_over(self, address: str, channel: Channel) -> None:
        """Give the accepting end of a new channel to the listener at `address`: the hook for wrappers
        (the simulator) that build their own channel pairs. DialError when nothing listens there."""
        acceptor = self._acceptors.get(address)
        if acceptor is None:
            raise DialError(f"nothing listens on {address}")
        acceptor(channel)

    def _register(self, address: str, acceptor: _Acceptor) -> None:
        if address in self._acceptors:
            raise DialError(f"address {address} is already in use")
        self._acceptors[address] = acceptor

    def _unregister(self, address: str) -> None:
        self._acceptors.pop(address, None)


class MemoryListener:
    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self.address = address

    async def serve(
        self,
        handler: ChannelHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:

            def accept(channel: Channel) -> None:
                nursery.start_soon(_run_handler, handler, channel)

            self._network._register(self.address, accept)
            try:
                task_status.started(self.address)
                await trio.sleep_forever()
            finally:
                self._network._unregister(self.address)


class MemoryDialer:
    def __init__(self, network: MemoryNetwork) -> None:
        self._network = network

    async def dial(self, address: str) -> Channel:
        await trio.lowlevel.checkpoint()
        if address not in self._network._acceptors:
            raise DialError(f"nothing listens on {address}")
        client, server = memory_channel_pair(self._network._buffer_messages)
        self._network.hand_over(address, server)
        return client


async def _run_handler(handler: ChannelHandler, channel: Channel) -> None:
    try:
        await handler(channel)
    except TokenPlaceError:
        pass  # one peer's failure must not take the listener down (as on WebSockets)
    finally:
        await channel.aclose()
