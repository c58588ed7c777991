"""Links over a transport: runs the sans-IO link protocol (tp_net.protocol.link) on a Channel.

This layer only moves bytes and applies timeouts; every decision is in tp_net.protocol.link.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from tp_crypto.identity import Identity
from tp_net.protocol.errors import ChannelClosed, HandshakeTimeout, LinkClosed, RemoteProtocolError
from tp_net.protocol.frames import Frame, LinkClose
from tp_net.protocol.link import REKEY_AFTER_MESSAGES, CloseReason, LinkHandshake, LinkSession
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.trio_util import acquire_soon, is_cancelled

LINK_HANDSHAKE_TIMEOUT_S = 10.0
LINK_CLOSE_TIMEOUT_S = 1.0


class Link:
    """An authenticated, encrypted link to one peer."""

    def __init__(self, channel: Channel, session: LinkSession) -> None:
        self._channel = channel
        self._session = session
        # Sealing assigns nonces: messages must reach the channel in the order they were sealed.
        self._send_lock = trio.StrictFIFOLock()
        self._closed = False
        self._send_broken = False

    @property
    def peer_id(self) -> bytes | None:
        """The peer's node id, or None when the peer stayed anonymous."""
        return self._session.peer_id

    @property
    def channel(self) -> Channel:
        """The transport channel under the link (for observers: what it says of the peer)."""
        return self._channel

    @property
    def peer_host(self) -> str | None:
        """The peer's network address (its source address on an accepted link), when the transport knows it:
        what per-address limits are keyed by. Channels may offer it as a `peer_host` attribute."""
        host = getattr(self._channel, "peer_host", None)
        return host if isinstance(host, str) else None

    async def send(self, frames: Sequence[Frame]) -> None:
        """Send frames in order, packed into as few messages as possible."""
        if self._closed:
            raise LinkClosed("link is closed")
        await acquire_soon(self._send_lock)
        try:
            if self._send_broken:
                raise LinkClosed("link is closed: an earlier send was interrupted")
            messages = self._session.seal(frames)
            try:
                for message in messages:
                    await self._channel.send_message(message)
            except ChannelClosed as exc:
                self._send_broken = True
                raise LinkClosed("link is closed") from exc
            except BaseException:
                # Cancelled mid-send: the peer may never see messages whose nonces are used up, so
                # nothing sealed later could be decrypted. The link can only be closed now.
                self._send_broken = True
                raise
        finally:
            self._send_lock.release()

    async def receive(self) -> list[Frame]:
        """The frames of the next message. Raises LinkClosed when the link ends.

        A protocol violation by the peer closes the link and raises RemoteProtocolError.
        """
        try:
            message = await self._channel.receive_message()
        except ChannelClosed as exc:
            self._closed = True
            raise LinkClosed("peer closed the link") from exc
        try:
            frames = self._session.open(message)
        except RemoteProtocolError:
            await self.aclose(CloseReason.PROTOCOL_ERROR)
            raise
        for frame in frames:
            if isinstance(frame, LinkClose):
                await self._close_channel()
                raise LinkClosed(f"peer closed the link (reason {frame.reason})", frame.reason)
        return frames

    async def aclose(self, reason: CloseReason = CloseReason.NORMAL) -> None:
        """Tell the peer why (best effort), then close the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not is_cancelled():
            await self._say_goodbye(reason)
        await self._close_channel()

    async def abort(self) -> None:
        """Close the channel at once, without a goodbye: for a peer that stopped answering (a goodbye would
        only wait for it). Tasks blocked sending or receiving on the link get LinkClosed. Idempotent."""
        if self._closed and self._send_broken:
            return
        self._closed = True
        self._send_broken = True
        with trio.CancelScope() as scope:
            # a cancelled channel close skips its polite goodbye (tp_net.trio.transport.Channel)
            scope.cancel()
            await self._close_channel()

    async def _say_goodbye(self, reason: CloseReason) -> None:
        with trio.move_on_after(LINK_CLOSE_TIMEOUT_S):
            async with self._send_lock:
                if not self._send_broken:
                    with contextlib.suppress(ChannelClosed):
                        for message in self._session.seal([LinkClose(int(reason))]):
                            await self._channel.send_message(message)

    async def _close_channel(self) -> None:
        self._closed = True
        await _abort(self._channel)


async def dial_link(
    dialer: Dialer,
    address: str,
    *,
    expected_peer_id: bytes,
    identity: Identity | None = None,
    handshake_timeout_s: float = LINK_HANDSHAKE_TIMEOUT_S,
    rekey_after_messages: int = REKEY_AFTER_MESSAGES,
) -> Link:
    """Dial `address` and authenticate the node `expected_peer_id` there; `identity=None` stays anonymous."""
    handshake = LinkHandshake(
        dialer=True,
        identity=identity,
        expected_peer_id=expected_peer_id,
        rekey_after_messages=rekey_after_messages,
    )
    channel = await dialer.dial(address)
    async with _closing_on_failure(channel, handshake_timeout_s):
        await channel.send_message(handshake.first_message())
        reply = handshake.receive(await channel.receive_message())
        assert reply is not None  # the dialer always answers message 2 with message 3
        await channel.send_message(reply)
    return Link(channel, handshake.session())


async def accept_link(
    channel: Channel,
    *,
    identity: Identity,
    handshake_timeout_s: float = LINK_HANDSHAKE_TIMEOUT_S,
    rekey_after_messages: int = REKEY_AFTER_MESSAGES,
) -> Link:
    """Run the listener side of the handshake on a freshly accepted channel."""
    handshake = LinkHandshake(dialer=False, identity=identity, rekey_after_messages=rekey_after_messages)
    async with _closing_on_failure(channel, handshake_timeout_s):
        while not handshake.complete:
            reply = handshake.receive(await channel.receive_message())
            if reply is not None:
                await channel.send_message(reply)
    return Link(channel, handshake.session())


@asynccontextmanager
async def _closing_on_failure(channel: Channel, timeout_s: float) -> AsyncIterator[None]:
    """Time-limits a handshake; closes the channel when it fails for any reason."""
    try:
        with trio.fail_after(timeout_s):
            yield
    except trio.TooSlowError:
        await _abort(channel)
        raise HandshakeTimeout(f"link handshake did not finish in {timeout_s} s") from None
    except ChannelClosed as exc:
        await _abort(channel)
        raise LinkClosed("peer closed the link during the handshake") from exc
    except BaseException:
        await _abort(channel)
        raise


async def _abort(channel: Channel) -> None:
    # Channels close even when the caller is cancelled (they close first, then checkpoint).
    await channel.aclose()
