"""Known-answer vectors for the wire formats: onion layers, cells, codec frames and descriptors.

Each vector file is a list of cases: the inputs (JSON, byte strings as {"hex": ...}) and the bytes the
product made from them when the file was generated. `tests/tp_net/test_vectors.py` recomputes every case
from its inputs and compares byte for byte, and decodes the stored bytes back to the inputs, so a format
change made the same way on the encoder and the decoder (which every round-trip test passes) still fails.

A deliberate format change regenerates every file with one command, and the diff shows what moved:

    .venv/bin/python -m tests.tp_net.make_vectors

Inputs are fixed here (keys from fixed seeds, fixed timestamps): Ed25519 and the onion crypto are
deterministic, and the only randomness of the hop handshake, its ephemeral keys, comes from
`fixed_ephemerals`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tp_crypto.noise
from tp_crypto.identity import Identity, node_id_to_x25519
from tp_crypto.noise import x25519_public
from tp_crypto.onion import HopHandshakeClient, HopKey, HopLayer, answer_hop_handshake, layer_from_secrets
from tp_net.protocol import cells, codec, frames, relay_messages
from tp_net.protocol.descriptors import (
    Descriptor,
    ModelOffer,
    NodeDescriptor,
    RelayDescriptor,
    decode_descriptor,
    sign_descriptor,
)
from tp_net.protocol.frames import Frame

ROOT = Path(__file__).resolve().parents[2]
NET_VECTORS = ROOT / "tests" / "tp_net" / "vectors"
ONION_VECTORS = ROOT / "tests" / "tp_crypto" / "vectors" / "onion.json"

Json = Any
Case = dict[str, Json]

# --- JSON form of inputs: bytes as {"hex": ...}, frames as {"frame": name, "fields": [...]} -----------------

_FRAME_CLASSES: dict[str, type[Frame]] = {
    cls.__name__: cls for cls in (*frames.LINK_FRAME_TYPES, *relay_messages.RELAY_MESSAGE_TYPES)
}


def to_json(value: Any) -> Json:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, Frame):
        names = codec._field_names(type(value))
        return {"frame": type(value).__name__, "fields": [to_json(getattr(value, n)) for n in names]}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def from_json(value: Json) -> Any:
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, dict) and set(value) == {"frame", "fields"}:
        return _FRAME_CLASSES[value["frame"]](*[from_json(item) for item in value["fields"]])
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        return {key: from_json(item) for key, item in value.items()}
    return value


def pattern(length: int, start: int = 0) -> bytes:
    """Recognisable filler bytes (start, start+1, ... mod 256)."""
    return bytes((start + index) % 256 for index in range(length))


# --- codec ---------------------------------------------------------------------------------------------

CELL_BODY = pattern(frames.CELL_BODY_BYTES, 7)
NODE_ID = pattern(32, 0xA0)
LINK_FRAMES: list[Frame] = [
    frames.LinkHello(frames.LINK_PROTOCOL_VERSION, None),
    frames.LinkHello(frames.LINK_PROTOCOL_VERSION, NODE_ID),
    frames.Ping(0),
    frames.Ping(300),
    frames.Pong(frames.PING_TOKEN_MAX),
    frames.Cell(frames.CIRCUIT_ID_MIN, 3, CELL_BODY),
    frames.Cell(frames.CIRCUIT_ID_MAX, frames.CELL_COMMAND_MAX, bytes(frames.CELL_BODY_BYTES)),
    frames.LinkClose(0),
    frames.LinkClose(frames.CLOSE_REASON_MAX),
    frames.Padding(b""),
    frames.Padding(pattern(300)),
]
RELAY_MESSAGES: list[Frame] = [
    relay_messages.RelayExtend(NODE_ID, "ws://10.1.0.1:7000/", pattern(49, 1)),
    relay_messages.RelayExtend(NODE_ID, None, pattern(49, 2)),
    relay_messages.RelayExtended(pattern(48, 3)),
    relay_messages.RelayBegin(1, "inference"),
    relay_messages.RelayData(relay_messages.STREAM_ID_MAX, b"hello"),
    relay_messages.RelayEnd(7, 0),
    relay_messages.RelayEnd(7, relay_messages.END_REASON_MAX),
    relay_messages.RelaySendme(relay_messages.CIRCUIT_STREAM_ID, pattern(relay_messages.SENDME_DIGEST_BYTES)),
    relay_messages.RelaySendme(9, b""),
    relay_messages.RelayDrop(),
]
BATCH_FRAMES: list[Frame] = [frames.Ping(1), frames.Padding(pattern(20)), frames.Pong(1), frames.LinkClose(2)]
BATCH_BYTES_SMALL = 32  # small enough that the batch above splits
DOCUMENTS: list[Json] = [
    {"model": "tiny", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 8, "stream": True},
    ["chunk", 1, None, False, -5, 2**40, "ü"],
    {},
]


def codec_cases() -> list[Case]:
    found: list[Case] = []
    for frame in [*LINK_FRAMES, *RELAY_MESSAGES]:
        found.append(
            {"op": "encode_frame", "input": to_json(frame), "bytes": codec.encode_frame(frame).hex()}
        )
    batches = codec.pack_batches(BATCH_FRAMES, BATCH_BYTES_SMALL)
    found.append(
        {
            "op": "pack_batches",
            "input": to_json(BATCH_FRAMES),
            "batch_bytes_max": BATCH_BYTES_SMALL,
            "bytes": [batch.hex() for batch in batches],
        }
    )
    for document in DOCUMENTS:
        found.append(
            {"op": "encode_document", "input": document, "bytes": codec.encode_document(document).hex()}
        )
    return found


# --- cells ---------------------------------------------------------------------------------------------

CIRCUIT_ID = frames.CIRCUIT_ID_MIN | 0x1234
HANDSHAKE = pattern(49, 0x40)


def cell_cases() -> list[Case]:
    found: list[Case] = [
        {
            "op": "constants",
            "input": None,
            "values": {
                "CELL_BODY_BYTES": frames.CELL_BODY_BYTES,
                "RELAY_PAYLOAD_BYTES": cells.RELAY_PAYLOAD_BYTES,
                "RELAY_DATA_BYTES_MAX": cells.RELAY_DATA_BYTES_MAX,
                "DIALER_ID_BIT": cells.DIALER_ID_BIT,
            },
        }
    ]
    for command in (cells.CellCommand.CREATE, cells.CellCommand.CREATED):
        cell = cells.handshake_cell(CIRCUIT_ID, command, HANDSHAKE)
        found.append(_cell_case("handshake_cell", [CIRCUIT_ID, int(command), to_json(HANDSHAKE)], cell))
    for reason in cells.DestroyReason:
        cell = cells.destroy_cell(CIRCUIT_ID, reason)
        found.append(_cell_case("destroy_cell", [CIRCUIT_ID, int(reason)], cell))
    relay = cells.relay_cell(CIRCUIT_ID | cells.DIALER_ID_BIT, CELL_BODY)
    found.append(_cell_case("relay_cell", [CIRCUIT_ID | cells.DIALER_ID_BIT, to_json(CELL_BODY)], relay))
    for message in RELAY_MESSAGES:
        payload = codec.encode_relay_payload(message, cells.RELAY_PAYLOAD_BYTES)
        found.append({"op": "encode_relay_payload", "input": to_json(message), "bytes": payload.hex()})
    longest = relay_messages.RelayData(relay_messages.STREAM_ID_MAX, pattern(cells.RELAY_DATA_BYTES_MAX))
    found.append(
        {
            "op": "encode_relay_payload",
            "input": to_json(longest),
            "bytes": codec.encode_relay_payload(longest, cells.RELAY_PAYLOAD_BYTES).hex(),
        }
    )
    stream = [
        relay_messages.RelayBegin(3, "inference"),
        relay_messages.RelayData(3, pattern(600)),
        relay_messages.RelayData(3, pattern(500, 9)),
        relay_messages.RelayEnd(3, 0),
    ]
    payloads = codec.pack_relay_payloads(stream, cells.RELAY_PAYLOAD_BYTES)
    found.append(
        {"op": "pack_relay_payloads", "input": to_json(stream), "bytes": [p.hex() for p in payloads]}
    )
    return found


def _cell_case(op: str, arguments: list[Json], cell: frames.Cell) -> Case:
    return {"op": op, "input": arguments, "bytes": codec.encode_frame(cell).hex()}


# --- onion layers --------------------------------------------------------------------------------------

HOP_SECRETS = [(pattern(64, 16 * hop), pattern(64, 16 * hop + 128)) for hop in range(3)]
ONION_PAYLOADS = [pattern(cells.RELAY_PAYLOAD_BYTES, start) for start in (0, 1, 2)]
HOP_PRIVATE = pattern(32, 0x11)
IDENTITY_SEED = pattern(32, 0x22)
CLIENT_EPHEMERAL = pattern(32, 0x33)
HOP_EPHEMERAL = pattern(32, 0x44)


def circuit_forward(layers: Sequence[HopLayer], target: int, payload: bytes) -> bytes:
    """The body the client sends for hop `target`: sealed by it, then one layer per hop up to it."""
    body = layers[target].forward.seal(payload)
    for layer in reversed(layers[: target + 1]):
        body = layer.forward.wrap(body)
    return body


def circuit_backward(layers: Sequence[HopLayer], origin: int, payload: bytes) -> bytes:
    """The body the client receives from hop `origin`: sealed there, one layer per hop on the way back."""
    body = layers[origin].backward.seal(payload)
    for layer in reversed(layers[: origin + 1]):
        body = layer.backward.wrap(body)
    return body


def circuit_layers(secrets: Sequence[tuple[bytes, bytes]]) -> list[HopLayer]:
    return [layer_from_secrets(forward, backward) for forward, backward in secrets]


# One circuit's traffic, in order: (direction, hop, payload index). Order matters (keystreams, counters):
# several cells per hop and direction, so the MAC counter of each goes past 0 and 1.
CIRCUIT_TRAFFIC = [
    ("forward", 0, 0),
    ("forward", 2, 1),
    ("backward", 2, 2),
    ("forward", 2, 0),
    ("forward", 1, 0),
    ("backward", 0, 1),
    ("forward", 2, 2),
    ("backward", 2, 0),
    ("backward", 2, 1),
    ("forward", 0, 1),
    ("forward", 0, 2),
]


@contextmanager
def fixed_ephemerals(privates: Sequence[bytes]) -> Iterator[None]:
    """Noise handshakes draw their ephemeral keys from `privates`, in order (test vectors only)."""
    pending = list(privates)
    original = tp_crypto.noise.generate_keypair

    def next_keypair() -> tuple[bytes, bytes]:
        private = pending.pop(0)
        return private, x25519_public(private)

    tp_crypto.noise.generate_keypair = next_keypair
    try:
        yield
    finally:
        tp_crypto.noise.generate_keypair = original


def hop_handshake(key: HopKey) -> tuple[bytes, bytes, HopLayer, HopLayer]:
    """(first message, reply, client's layer, hop's layer) of one hop handshake with fixed keys."""
    if key is HopKey.ONION:
        hop_private, hop_public = HOP_PRIVATE, x25519_public(HOP_PRIVATE)
    else:
        identity = Identity(IDENTITY_SEED)
        hop_private, hop_public = identity.x25519_private, node_id_to_x25519(identity.node_id)
    with fixed_ephemerals([CLIENT_EPHEMERAL, HOP_EPHEMERAL]):
        client = HopHandshakeClient(hop_public, key=key)
        first = client.first_message()
        reply, hop_layer = answer_hop_handshake(hop_private, first)
    return first, reply, client.finish(reply), hop_layer


def onion_cases() -> list[Case]:
    layers = circuit_layers(HOP_SECRETS)
    traffic = []
    for direction, hop, index in CIRCUIT_TRAFFIC:
        send = circuit_forward if direction == "forward" else circuit_backward
        body = send(layers, hop, ONION_PAYLOADS[index])
        traffic.append({"direction": direction, "hop": hop, "payload": index, "bytes": body.hex()})
    found: list[Case] = [
        {
            "op": "circuit",
            "input": {
                "hop_secrets": to_json(HOP_SECRETS),
                "payloads": to_json(ONION_PAYLOADS),
            },
            "cells": traffic,
        }
    ]
    for key in HopKey:
        first, reply, client_layer, _ = hop_handshake(key)
        found.append(
            {
                "op": "hop_handshake",
                "input": {
                    "key": key.name,
                    "hop_private": to_json(HOP_PRIVATE),
                    "identity_seed": to_json(IDENTITY_SEED),
                    "client_ephemeral": to_json(CLIENT_EPHEMERAL),
                    "hop_ephemeral": to_json(HOP_EPHEMERAL),
                    "payload": to_json(ONION_PAYLOADS[0]),
                },
                "first_message": first.hex(),
                "reply": reply.hex(),
                "forward_cell": circuit_forward([client_layer], 0, ONION_PAYLOADS[0]).hex(),
                "backward_cell": circuit_backward([client_layer], 0, ONION_PAYLOADS[0]).hex(),
            }
        )
    return found


# --- descriptors ---------------------------------------------------------------------------------------

DESCRIPTOR_SEED = pattern(32, 0x55)
PUBLISHED = 1_800_000_000


def descriptors() -> list[Descriptor]:
    node_id = Identity(DESCRIPTOR_SEED).node_id
    relay = RelayDescriptor(
        node_id,
        "ws://relay.example:7000/",
        (pattern(32, 1), pattern(32, 2)),
        capacity=5000,
        family="example-family",
        version="0.1.0",
        published=PUBLISHED,
        expires=PUBLISHED + 3600,
    )
    offers = (
        ModelOffer("tiny", pattern(32, 3), 1_000_000, "Q8_0", 2048, 4, 1, vision=True),
        ModelOffer("llama-3-8b-instruct", pattern(32, 4), 8_000_000_000, "Q4_K_M", 8192, 2, 0),
    )
    node = NodeDescriptor(
        node_id,
        (pattern(32, 5),),
        (pattern(32, 6), pattern(32, 7)),
        offers,
        "0.1.0",
        PUBLISHED,
        PUBLISHED + 7200,
    )
    return [relay, node]


def descriptor_cases() -> list[Case]:
    identity = Identity(DESCRIPTOR_SEED)
    found: list[Case] = []
    for descriptor in descriptors():
        signed = sign_descriptor(identity, descriptor)
        assert decode_descriptor(signed.body) == descriptor
        found.append(
            {
                "op": "sign_descriptor",
                "input": {
                    "seed": to_json(DESCRIPTOR_SEED),
                    "kind": type(descriptor).__name__,
                    "fields": to_json(dataclasses.asdict(descriptor)),
                },
                "body": signed.body.hex(),
                "signature": signed.signature.hex(),
            }
        )
    return found


# --- files ---------------------------------------------------------------------------------------------

GENERATORS: dict[Path, Callable[[], list[Case]]] = {
    ONION_VECTORS: onion_cases,
    NET_VECTORS / "cells.json": cell_cases,
    NET_VECTORS / "codec.json": codec_cases,
    NET_VECTORS / "descriptors.json": descriptor_cases,
}


def render(cases: list[Case]) -> str:
    document = {"generated_by": "python -m tests.tp_net.make_vectors", "cases": cases}
    return json.dumps(document, indent=1, ensure_ascii=True) + "\n"


def main() -> None:
    for path, generate in GENERATORS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(generate()))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
