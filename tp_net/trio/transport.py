"""The transport interface: message channels, dialers and listeners.

A transport moves whole binary messages between two machines, in order. The link layer runs on any transport;
the same node code runs on WebSockets in production and on the in-memory transport in tests and the simulator.
Transports raise only tp_net.protocol.errors types (DialError, ChannelClosed, LocalProtocolError).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

# Largest message a transport accepts; a link message (one Noise transport message) is at most 65535 bytes.
CHANNEL_MESSAGE_BYTES_MAX = 65535
DIAL_TIMEOUT_S = 10.0


class Channel(Protocol):
    """A bidirectional, ordered, reliable channel of binary messages."""

    async def send_message(self, message: bytes) -> None:
        """Send one message; raises ChannelClosed when the channel is gone."""

    async def receive_message(self) -> bytes:
        """The next message; raises ChannelClosed once the channel is closed or broken."""

    async def aclose(self) -> None:
        """Close the channel; idempotent. Closes it even when the caller is cancelled (then skipping
        any polite goodbye with the peer)."""


ChannelHandler = Callable[[Channel], Awaitable[None]]


class Dialer(Protocol):
    async def dial(self, address: str) -> Channel:
        """Open a channel to `address`; raises DialError when that fails."""


class Listener(Protocol):
    async def serve(
        self,
        handler: ChannelHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept channels forever, running `handler` for each in its own task.

        Reports the address it listens on through `task_status`; the channel is closed when the handler
        returns.
        """
