"""A node descriptor's sealing keys (PROTOCOL.md 7.1 and 9): signed with the rest, 1..2 keys of 32 bytes,
absent rather than empty, so a descriptor has exactly one encoding."""

from __future__ import annotations

import dataclasses

import pytest

from tests.tp_net.directory_factories import PUBLISHED, identity, node_descriptor
from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol.codec import decode_document, encode_document
from tp_net.protocol.descriptors import NodeDescriptor, decode_descriptor, encode_descriptor, sign_descriptor

NODE = identity(7)


def test_sealing_keys_round_trip_and_are_signed() -> None:
    descriptor = dataclasses.replace(node_descriptor(NODE), sealing_keys=(b"k" * 32, b"j" * 32))
    signed = sign_descriptor(NODE, descriptor)
    assert signed.open(PUBLISHED) == descriptor
    fields = decode_document(signed.body)
    fields[9] = [b"x" * 32]
    forged = dataclasses.replace(signed, body=encode_document(fields))
    with pytest.raises(RemoteProtocolError, match="signature"):
        forged.open(PUBLISHED)


def test_a_descriptor_without_sealing_keys_encodes_as_before() -> None:
    descriptor = node_descriptor(NODE)
    assert len(decode_document(encode_descriptor(descriptor))) == 9
    decoded = decode_descriptor(encode_descriptor(descriptor))
    assert isinstance(decoded, NodeDescriptor)
    assert decoded.sealing_keys == ()


@pytest.mark.parametrize("keys", [[], [b"short"], [b"k" * 32] * 3, "not a list"])
def test_bad_sealing_keys_are_refused(keys: object) -> None:
    fields = decode_document(encode_descriptor(node_descriptor(NODE)))
    fields.append(keys)
    with pytest.raises(RemoteProtocolError):
        decode_descriptor(encode_document(fields)).check()
