"""Fuzzing the link handshake and session (tp_net.protocol.link): garbage at any step, a peer that completes
Noise but sends any hello, and any transport message give only RemoteProtocolError."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity
from tp_crypto.noise import XX, HandshakeState
from tp_net.protocol.frames import Padding, Ping
from tp_net.protocol.link import LINK_MESSAGE_BYTES_MAX, LINK_PROLOGUE, LinkHandshake, LinkSession

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RELAY = Identity(bytes(range(32)))
DIALER = Identity(bytes(range(1, 33)))

# Random short messages, and zero-filled ones around the size limit (random 64 KiB values are slow to draw).
junk = st.binary(max_size=200) | st.integers(LINK_MESSAGE_BYTES_MAX - 8, LINK_MESSAGE_BYTES_MAX + 8).map(
    bytes
)


def live_messages() -> tuple[LinkHandshake, LinkHandshake, list[bytes]]:
    dialer = LinkHandshake(dialer=True, identity=DIALER, expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    first = dialer.first_message()
    return dialer, listener, [first]


def mutate(message: bytes, data: st.DataObject) -> bytes:
    if not message or data.draw(st.booleans()):
        return data.draw(junk)
    position = data.draw(st.integers(0, len(message) - 1))
    cut = data.draw(st.integers(0, len(message)))
    flipped = bytearray(message)
    flipped[position] ^= data.draw(st.integers(1, 255))
    return bytes(flipped[:cut]) if data.draw(st.booleans()) else bytes(flipped)


@FUZZ
@given(st.integers(0, 2), st.data())
def test_a_broken_message_at_any_step_gives_only_protocol_errors(step: int, data: st.DataObject) -> None:
    dialer, listener, (first,) = live_messages()
    try:
        second = listener.receive(mutate(first, data) if step == 0 else first)
        assert second is not None
        third = dialer.receive(mutate(second, data) if step == 1 else second)
        assert third is not None
        listener.receive(mutate(third, data) if step == 2 else third)
    except RemoteProtocolError:
        return
    assert listener.complete  # a mutation that changed nothing meaningful (e.g. none) completes it


@FUZZ
@given(st.binary(max_size=300))
def test_a_listener_sending_any_hello_gives_only_protocol_errors(payload: bytes) -> None:
    """A man in the middle who completes the Noise handshake with its own key but says anything."""
    dialer = LinkHandshake(dialer=True, identity=None, expected_peer_id=RELAY.node_id)
    impostor = HandshakeState(
        XX, initiator=False, prologue=LINK_PROLOGUE, static_private=RELAY.x25519_private
    )
    impostor.read_message(dialer.first_message())
    try:
        dialer.receive(impostor.write_message(payload))
    except RemoteProtocolError:
        return
    assert dialer.peer_id == RELAY.node_id  # only a well-formed hello naming the expected relay passes


def sessions() -> tuple[LinkSession, LinkSession]:
    dialer, listener, (first,) = live_messages()
    second = listener.receive(first)
    assert second is not None
    third = dialer.receive(second)
    assert third is not None
    listener.receive(third)
    return dialer.session(), listener.session()


@FUZZ
@given(st.data())
def test_any_transport_message_gives_frames_or_a_protocol_error(data: st.DataObject) -> None:
    dialer, listener = sessions()
    (genuine,) = dialer.seal([Ping(7), Padding(b"x" * data.draw(st.integers(0, 2000)))])
    message = mutate(genuine, data) if data.draw(st.booleans()) else genuine
    try:
        frames = listener.open(message)
    except RemoteProtocolError:
        return
    assert message == genuine and frames[0] == Ping(7)
