"""The link protocol, sans-IO: handshakes and sessions driven synchronously."""

import pytest

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.identity import Identity
from tp_net.protocol.frames import Padding, Ping
from tp_net.protocol.link import HandshakeStep, LinkHandshake, LinkSession

RELAY = Identity.generate()
NODE = Identity.generate()


def handshake(
    dialer_identity: Identity | None, *, expected: bytes = RELAY.node_id, rekey: int = 2**20
) -> tuple[LinkSession, LinkSession]:
    dialer = LinkHandshake(
        dialer=True, identity=dialer_identity, expected_peer_id=expected, rekey_after_messages=rekey
    )
    listener = LinkHandshake(dialer=False, identity=RELAY, rekey_after_messages=rekey)
    message2 = listener.receive(dialer.first_message())
    assert message2 is not None
    message3 = dialer.receive(message2)
    assert message3 is not None
    assert listener.receive(message3) is None
    assert dialer.complete and listener.complete
    return dialer.session(), listener.session()


def test_authenticated_dialer_learns_and_proves_ids() -> None:
    dialer, listener = handshake(NODE)
    assert dialer.peer_id == RELAY.node_id
    assert listener.peer_id == NODE.node_id


def test_anonymous_dialer_stays_anonymous() -> None:
    dialer, listener = handshake(None)
    assert dialer.peer_id == RELAY.node_id
    assert listener.peer_id is None


def test_frames_flow_both_ways_in_order() -> None:
    dialer, listener = handshake(NODE)
    frames = [Padding(b"%d:" % i + b"payload %d" % i) for i in range(500)]
    received = [f for m in dialer.seal(frames) for f in listener.open(m)]
    assert received == frames
    back = [f for m in listener.seal([Ping(1)]) for f in dialer.open(m)]
    assert back == [Ping(1)]


def test_many_frames_are_packed_into_few_messages() -> None:
    dialer, _ = handshake(NODE)
    messages = dialer.seal([Padding(b"x" * 509)] * 100)
    assert len(messages) == 1


def test_wrong_expected_node_id_aborts() -> None:
    dialer = LinkHandshake(dialer=True, identity=NODE, expected_peer_id=Identity.generate().node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    message2 = listener.receive(dialer.first_message())
    assert message2 is not None
    with pytest.raises(RemoteProtocolError, match="not the node it was expected"):
        dialer.receive(message2)
    assert dialer.step is HandshakeStep.FAILED


@pytest.mark.parametrize("message_index", [1, 2])
def test_tampered_handshake_message_is_rejected(message_index: int) -> None:
    dialer = LinkHandshake(dialer=True, identity=NODE, expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    message = dialer.first_message()
    receivers = [listener, dialer, listener]
    for index, receiver in enumerate(receivers):
        if index == message_index:
            tampered = bytearray(message)
            tampered[-1] ^= 0x01
            with pytest.raises(RemoteProtocolError):
                receiver.receive(bytes(tampered))
            return
        reply = receiver.receive(message)
        assert reply is not None
        message = reply


def test_tampered_ephemeral_is_caught_by_the_dialer() -> None:
    # Message 1 is a bare public key: nothing to check yet, but the transcripts now differ,
    # so the dialer cannot decrypt message 2.
    dialer = LinkHandshake(dialer=True, identity=NODE, expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    tampered = bytearray(dialer.first_message())
    tampered[5] ^= 0x01
    message2 = listener.receive(bytes(tampered))
    assert message2 is not None
    with pytest.raises(RemoteProtocolError):
        dialer.receive(message2)


def test_message_one_payload_is_refused() -> None:
    listener = LinkHandshake(dialer=False, identity=RELAY)
    # A dialer's first message is a bare 32-byte ephemeral key; extra bytes would be a cleartext payload.
    first = LinkHandshake(dialer=True, identity=None, expected_peer_id=RELAY.node_id).first_message()
    with pytest.raises(RemoteProtocolError):
        listener.receive(first + b"leak")


def test_version_mismatch_is_rejected() -> None:
    dialer = LinkHandshake(dialer=True, identity=NODE, expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY, version=2)
    message2 = listener.receive(dialer.first_message())
    assert message2 is not None
    with pytest.raises(RemoteProtocolError, match="link version 2"):
        dialer.receive(message2)


def test_claimed_node_id_must_match_the_proven_key() -> None:
    class Impostor(LinkHandshake):
        def _own_node_id(self) -> bytes | None:
            return NODE.node_id  # claims NODE but proves another static key

    dialer = Impostor(dialer=True, identity=Identity.generate(), expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    message2 = listener.receive(dialer.first_message())
    assert message2 is not None
    message3 = dialer.receive(message2)
    assert message3 is not None
    with pytest.raises(RemoteProtocolError, match="proved another key"):
        listener.receive(message3)


def test_out_of_turn_calls_are_local_errors() -> None:
    listener = LinkHandshake(dialer=False, identity=RELAY)
    with pytest.raises(LocalProtocolError):
        listener.first_message()
    with pytest.raises(LocalProtocolError):
        listener.session()
    with pytest.raises(LocalProtocolError):
        LinkHandshake(dialer=True, identity=None)
    with pytest.raises(LocalProtocolError):
        LinkHandshake(dialer=False, identity=None)


def test_tampered_transport_message_breaks_the_session() -> None:
    dialer, listener = handshake(NODE)
    message = bytearray(dialer.seal([Padding(b"1:secret")])[0])
    message[3] ^= 0x80
    with pytest.raises(RemoteProtocolError):
        listener.open(bytes(message))
    with pytest.raises(LocalProtocolError, match="stopped receiving"):
        listener.open(dialer.seal([Padding(b"2:more")])[0])


def test_replayed_message_is_rejected() -> None:
    dialer, listener = handshake(NODE)
    message = dialer.seal([Padding(b"1:once")])[0]
    listener.open(message)
    with pytest.raises(RemoteProtocolError):
        listener.open(message)


def test_reordered_messages_are_rejected() -> None:
    dialer, listener = handshake(NODE)
    first = dialer.seal([Padding(b"1:a")])[0]
    second = dialer.seal([Padding(b"2:b")])[0]
    with pytest.raises(RemoteProtocolError):
        listener.open(second)
    del first


def test_messages_from_another_link_are_rejected() -> None:
    dialer, _ = handshake(NODE)
    _, other_listener = handshake(NODE)
    with pytest.raises(RemoteProtocolError):
        other_listener.open(dialer.seal([Padding(b"1:a")])[0])


def test_sessions_rekey_in_step_and_keep_working() -> None:
    dialer, listener = handshake(NODE, rekey=3)
    for i in range(20):
        (message,) = dialer.seal([Padding(b"%d:" % i + b"x")])
        assert listener.open(message) == [Padding(b"%d:" % i + b"x")]


def test_rekeying_changes_the_keys() -> None:
    dialer = LinkHandshake(dialer=True, identity=NODE, expected_peer_id=RELAY.node_id, rekey_after_messages=2)
    listener = LinkHandshake(dialer=False, identity=RELAY, rekey_after_messages=3)
    message2 = listener.receive(dialer.first_message())
    assert message2 is not None
    message3 = dialer.receive(message2)
    assert message3 is not None
    listener.receive(message3)
    sender, receiver = dialer.session(), listener.session()
    receiver.open(sender.seal([Padding(b"1:x")])[0])
    receiver.open(sender.seal([Padding(b"2:x")])[0])
    # The sender rekeyed after message 2; a receiver that did not cannot read message 3.
    with pytest.raises(RemoteProtocolError):
        receiver.open(sender.seal([Padding(b"3:x")])[0])


def test_oversized_message_is_rejected_before_decrypting() -> None:
    _, listener = handshake(NODE)
    with pytest.raises(RemoteProtocolError, match="too large"):
        listener.open(b"\x00" * 70000)
