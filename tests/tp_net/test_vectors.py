"""Known-answer vectors (tests/tp_net/make_vectors.py): every case recomputed and compared byte for byte, and
every stored encoding decoded back to its inputs.

A deliberate wire-format change fails here until the files are regenerated with
`.venv/bin/python -m tests.tp_net.make_vectors` (review the diff: it shows every byte that moved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.tp_net import make_vectors as mv
from tp_crypto.identity import Identity
from tp_crypto.noise import x25519_public
from tp_crypto.onion import HopHandshakeClient, HopKey, HopLayer, OnionDirection, answer_hop_handshake
from tp_net.protocol import cells, codec
from tp_net.protocol.descriptors import SignedDescriptor
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, Frame

REGENERATE = "format changed: if on purpose, regenerate with `python -m tests.tp_net.make_vectors`"


def stored_cases(path: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


def cases_of(path: Path, op: str) -> list[dict[str, Any]]:
    found = [case for case in stored_cases(path) if case["op"] == op]
    assert found, f"{path.name} has no {op} case"
    return found


@pytest.mark.parametrize("path", list(mv.GENERATORS), ids=[path.name for path in mv.GENERATORS])
def test_recomputed_vectors_match_the_committed_files(path: Path) -> None:
    stored = stored_cases(path)
    fresh = json.loads(mv.render(mv.GENERATORS[path]()))["cases"]
    assert len(fresh) == len(stored), REGENERATE
    for index, (now, then) in enumerate(zip(fresh, stored, strict=True)):
        assert now == then, f"{path.name} case {index} ({then['op']}): {REGENERATE}"


# --- decoding the stored bytes --------------------------------------------------------------------------

CODEC = mv.NET_VECTORS / "codec.json"
CELLS = mv.NET_VECTORS / "cells.json"


def test_stored_frames_decode_to_their_inputs() -> None:
    for case in cases_of(CODEC, "encode_frame"):
        frame = mv.from_json(case["input"])
        registry = codec.RELAY_MESSAGES if frame.TAG in codec.RELAY_MESSAGES else codec.LINK_FRAMES
        assert codec.decode_frame(bytes.fromhex(case["bytes"]), registry) == frame


def test_stored_batches_decode_to_their_frames_in_order() -> None:
    (case,) = cases_of(CODEC, "pack_batches")
    assert len(case["bytes"]) > 1  # the case exercises the split
    decoded = [frame for batch in case["bytes"] for frame in codec.decode_batch(bytes.fromhex(batch))]
    assert decoded == mv.from_json(case["input"])


def test_stored_documents_decode_to_their_inputs() -> None:
    for case in cases_of(CODEC, "encode_document"):
        assert codec.decode_document(bytes.fromhex(case["bytes"])) == case["input"]


def _stored_cell(case: dict[str, Any]) -> Cell:
    frame = codec.decode_frame(bytes.fromhex(case["bytes"]))
    assert isinstance(frame, Cell)
    return frame


def test_stored_handshake_cells_carry_their_message() -> None:
    for case in cases_of(CELLS, "handshake_cell"):
        circuit_id, command, message = mv.from_json(case["input"])
        cell = _stored_cell(case)
        assert (cell.circuit_id, cell.command) == (circuit_id, command)
        assert cells.handshake_message(cell) == message


def test_stored_destroy_cells_carry_their_reason() -> None:
    stored = cases_of(CELLS, "destroy_cell")
    assert {case["input"][1] for case in stored} == {int(reason) for reason in cells.DestroyReason}
    for case in stored:
        cell = _stored_cell(case)
        assert cell.command == cells.CellCommand.DESTROY
        assert cells.destroy_reason(cell) == case["input"][1]


def test_stored_relay_payloads_decode_to_their_messages() -> None:
    for case in cases_of(CELLS, "encode_relay_payload"):
        payload = bytes.fromhex(case["bytes"])
        assert len(payload) == cells.RELAY_PAYLOAD_BYTES
        assert codec.decode_relay_payload(payload) == mv.from_json(case["input"])
    (case,) = cases_of(CELLS, "pack_relay_payloads")
    payloads = [bytes.fromhex(payload) for payload in case["bytes"]]
    assert len(payloads) > 1  # the case exercises the split
    decoded = [message for payload in payloads for message in codec.decode_relay_messages(payload)]
    assert decoded == mv.from_json(case["input"])


# --- onion layers ---------------------------------------------------------------------------------------

ONION = mv.ONION_VECTORS


def _receive(direction: list[OnionDirection], body: bytes, target: int) -> bytes | None:
    """Peel layers 0..target in order; no earlier layer may recognize the cell. The payload at `target`."""
    for index in range(target + 1):
        body = direction[index].unwrap(body)
        opened = direction[index].open(body)
        if index < target:
            assert opened is None
        else:
            return opened
    raise AssertionError("unreachable")


def test_stored_circuit_cells_open_at_their_hop_only() -> None:
    (case,) = cases_of(ONION, "circuit")
    secrets = [tuple(pair) for pair in mv.from_json(case["input"]["hop_secrets"])]
    payloads = mv.from_json(case["input"]["payloads"])
    # Fresh layers from the same secrets: the hops (forward) and the client (backward) of the stored circuit.
    receivers: list[HopLayer] = mv.circuit_layers(secrets)
    forward = [layer.forward for layer in receivers]
    backward = [layer.backward for layer in receivers]
    for cell in case["cells"]:
        body = bytes.fromhex(cell["bytes"])
        assert len(body) == CELL_BODY_BYTES
        directions = forward if cell["direction"] == "forward" else backward
        assert _receive(directions, body, cell["hop"]) == payloads[cell["payload"]]


@pytest.mark.parametrize("key", list(HopKey), ids=[key.name for key in HopKey])
def test_stored_hop_handshake_replays_on_both_sides(key: HopKey) -> None:
    (case,) = [case for case in cases_of(ONION, "hop_handshake") if case["input"]["key"] == key.name]
    inputs = mv.from_json(case["input"])
    first, reply = bytes.fromhex(case["first_message"]), bytes.fromhex(case["reply"])
    identity = Identity(inputs["identity_seed"])
    if key is HopKey.ONION:
        hop_private, hop_public = inputs["hop_private"], x25519_public(inputs["hop_private"])
    else:
        hop_private, hop_public = identity.x25519_private, x25519_public(identity.x25519_private)
    with mv.fixed_ephemerals([inputs["client_ephemeral"]]):
        client = HopHandshakeClient(hop_public, key=key)
        assert client.first_message() == first
    with mv.fixed_ephemerals([inputs["hop_ephemeral"]]):
        hop_reply, hop_layer = answer_hop_handshake(hop_private, first)
    assert hop_reply == reply
    client_layer = client.finish(reply)
    forward_cell, backward_cell = bytes.fromhex(case["forward_cell"]), bytes.fromhex(case["backward_cell"])
    assert _receive([hop_layer.forward], forward_cell, 0) == inputs["payload"]
    assert _receive([client_layer.backward], backward_cell, 0) == inputs["payload"]


# --- descriptors ----------------------------------------------------------------------------------------


def test_stored_descriptors_open_with_their_signature() -> None:
    stored = cases_of(mv.NET_VECTORS / "descriptors.json", "sign_descriptor")
    assert len(stored) == len(mv.descriptors())
    for case, descriptor in zip(stored, mv.descriptors(), strict=True):
        signed = SignedDescriptor(bytes.fromhex(case["body"]), bytes.fromhex(case["signature"]))
        assert signed.open(now=mv.PUBLISHED + 1) == descriptor
        assert descriptor.node_id == Identity(mv.from_json(case["input"]["seed"])).node_id


def test_every_frame_type_has_a_vector() -> None:
    encoded = {case["input"]["frame"] for case in cases_of(CODEC, "encode_frame")}
    assert encoded == set(mv._FRAME_CLASSES)
    assert all(issubclass(cls, Frame) for cls in mv._FRAME_CLASSES.values())
