"""The link protocol, sans-IO: a Noise XX handshake, then encrypted batches of frames.

The dialer is the Noise initiator. Message 1 carries only the dialer's ephemeral key. Message 2 carries the
listener's LinkHello (version, node id) under its static key, which must be the X25519 form of that node id
and of the id the dialer expected. Message 3 carries the dialer's LinkHello: its node id (relays, GPU nodes)
or none (gateways, which use a fresh random static key per link and so stay anonymous). The versions travel
inside the handshake, whose hash authenticates them, so a downgrade by a man in the middle is impossible.

After the handshake each link message is one Noise transport message holding a batch of frames. Both sides
rekey a direction after every `rekey_after_messages` messages in it, so nonces never approach exhaustion.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.identity import Identity, node_id_to_x25519, short_id
from tp_crypto.noise import XX, CipherState, HandshakeState, generate_keypair
from tp_net.protocol import codec
from tp_net.protocol.errors import WrongPeerError
from tp_net.protocol.frames import LINK_PROTOCOL_VERSION, Frame, LinkHello

LINK_PROLOGUE = b"token.place link"
LINK_MESSAGE_BYTES_MAX = 65535
REKEY_AFTER_MESSAGES = 2**20
_MAC_BYTES = 16


class CloseReason(enum.IntEnum):
    """Why a link was closed (sent in LinkClose)."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    TIMEOUT = 2
    SHUTDOWN = 3
    RESOURCE_LIMIT = 4


class HandshakeStep(enum.Enum):
    SEND_EPHEMERAL = "dialer sends message 1"
    AWAIT_EPHEMERAL = "listener awaits message 1"
    AWAIT_LISTENER_HELLO = "dialer awaits message 2"
    AWAIT_DIALER_HELLO = "listener awaits message 3"
    DONE = "established"
    FAILED = "failed"


# The one transition table of the handshake: the step after a successful action in a step.
_NEXT_STEP = {
    HandshakeStep.SEND_EPHEMERAL: HandshakeStep.AWAIT_LISTENER_HELLO,
    HandshakeStep.AWAIT_EPHEMERAL: HandshakeStep.AWAIT_DIALER_HELLO,
    HandshakeStep.AWAIT_LISTENER_HELLO: HandshakeStep.DONE,
    HandshakeStep.AWAIT_DIALER_HELLO: HandshakeStep.DONE,
}


class LinkSession:
    """An established link: seals frames into messages and opens messages into frames."""

    def __init__(
        self,
        send_cipher: CipherState,
        receive_cipher: CipherState,
        peer_id: bytes | None,
        *,
        rekey_after_messages: int = REKEY_AFTER_MESSAGES,
    ) -> None:
        self.peer_id = peer_id
        self._send_cipher = send_cipher
        self._receive_cipher = receive_cipher
        self._rekey_after = rekey_after_messages
        self._sent_messages = 0
        self._received_messages = 0
        self._broken = False

    def seal(self, frames: Sequence[Frame]) -> list[bytes]:
        """Encrypt frames into as few link messages as they fit in, in order."""
        messages = []
        for batch in codec.pack_batches(frames, LINK_MESSAGE_BYTES_MAX - _MAC_BYTES):
            messages.append(self._send_cipher.encrypt_with_ad(b"", batch))
            self._sent_messages += 1
            if self._sent_messages % self._rekey_after == 0:
                self._send_cipher.rekey()
        return messages

    def open(self, message: bytes) -> list[Frame]:
        """Decrypt one link message; a forged, replayed or malformed one breaks the receiving direction
        for good (sending still works, so the reason can be told to the peer)."""
        self._require_usable()
        if len(message) > LINK_MESSAGE_BYTES_MAX:
            self._broken = True
            raise RemoteProtocolError(f"link message of {len(message)} bytes is too large")
        try:
            batch = self._receive_cipher.decrypt_with_ad(b"", message)
            frames = codec.decode_batch(batch)
        except RemoteProtocolError:
            self._broken = True
            raise
        self._received_messages += 1
        if self._received_messages % self._rekey_after == 0:
            self._receive_cipher.rekey()
        return frames

    def _require_usable(self) -> None:
        if self._broken:
            raise LocalProtocolError("link session stopped receiving after a protocol error")


class LinkHandshake:
    """One side of the link handshake. Feed it the peer's messages; send what it returns."""

    def __init__(
        self,
        *,
        dialer: bool,
        identity: Identity | None,
        expected_peer_id: bytes | None = None,
        rekey_after_messages: int = REKEY_AFTER_MESSAGES,
        version: int = LINK_PROTOCOL_VERSION,
    ) -> None:
        """`version` is the version this side announces; only tests announce another one."""
        if dialer and expected_peer_id is None:
            raise LocalProtocolError("a dialer must name the node id it expects to reach")
        if not dialer and identity is None:
            raise LocalProtocolError("a listener must have an identity to prove")
        self._identity = identity
        self._expected_peer_id = expected_peer_id
        self._rekey_after = rekey_after_messages
        self._version = version
        static = identity.x25519_private if identity else generate_keypair()[0]
        self._noise = HandshakeState(XX, initiator=dialer, prologue=LINK_PROLOGUE, static_private=static)
        self.step = HandshakeStep.SEND_EPHEMERAL if dialer else HandshakeStep.AWAIT_EPHEMERAL
        self.peer_id: bytes | None = None

    @property
    def complete(self) -> bool:
        return self.step is HandshakeStep.DONE

    def first_message(self) -> bytes:
        """The dialer's opening message."""
        self._expect_step(HandshakeStep.SEND_EPHEMERAL)
        message = self._noise.write_message(b"")
        self._advance()
        return message

    def receive(self, message: bytes) -> bytes | None:
        """Process the peer's next handshake message; returns the reply to send, if any."""
        step = self.step
        if step not in (
            HandshakeStep.AWAIT_EPHEMERAL,
            HandshakeStep.AWAIT_LISTENER_HELLO,
            HandshakeStep.AWAIT_DIALER_HELLO,
        ):
            raise LocalProtocolError(f"no handshake message expected in step {step.value!r}")
        if len(message) > LINK_MESSAGE_BYTES_MAX:
            raise RemoteProtocolError("handshake message too large")
        try:
            reply = self._receive_in_step(step, message)
        except RemoteProtocolError:
            self.step = HandshakeStep.FAILED
            raise
        self._advance()
        return reply

    def session(self) -> LinkSession:
        """The established session (only once the handshake is complete)."""
        self._expect_step(HandshakeStep.DONE)
        send, receive = self._noise.split()
        return LinkSession(send, receive, self.peer_id, rekey_after_messages=self._rekey_after)

    def _receive_in_step(self, step: HandshakeStep, message: bytes) -> bytes | None:
        payload = self._noise.read_message(message)
        if step is HandshakeStep.AWAIT_EPHEMERAL:
            if payload:
                raise RemoteProtocolError("the first handshake message must carry no payload")
            return self._own_hello_message()
        hello = self._read_hello(payload)
        if step is HandshakeStep.AWAIT_LISTENER_HELLO:
            if hello.node_id != self._expected_peer_id:
                assert self._expected_peer_id is not None  # a dialer always expects one (see __init__)
                raise WrongPeerError(self._expected_peer_id, hello.node_id)
            self.peer_id = hello.node_id
            return self._own_hello_message()
        self.peer_id = hello.node_id
        return None

    def _own_node_id(self) -> bytes | None:
        return self._identity.node_id if self._identity else None

    def _own_hello_message(self) -> bytes:
        hello = LinkHello(self._version, self._own_node_id())
        return self._noise.write_message(codec.encode_frame(hello))

    def _read_hello(self, payload: bytes) -> LinkHello:
        hello = codec.decode_frame(payload)
        if not isinstance(hello, LinkHello):
            raise RemoteProtocolError("handshake payload is not a LinkHello")
        if hello.version != LINK_PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"peer speaks link version {hello.version}, we speak {LINK_PROTOCOL_VERSION}"
            )
        if hello.node_id is not None and node_id_to_x25519(hello.node_id) != self._noise.remote_static:
            raise RemoteProtocolError(f"peer claims node id {short_id(hello.node_id)} but proved another key")
        return hello

    def _expect_step(self, step: HandshakeStep) -> None:
        if self.step is not step:
            raise LocalProtocolError(f"handshake is in step {self.step.value!r}, not {step.value!r}")

    def _advance(self) -> None:
        self.step = _NEXT_STEP[self.step]
