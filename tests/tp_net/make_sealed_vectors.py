"""Writes tests/tp_net/vectors/sealed.json: one sealed request and its response with all randomness fixed,
the known answer that tests/tp_net/test_sealed.py and the JS client's test (js/test) recompute byte for byte.

Run `.venv/bin/python -m tests.tp_net.make_sealed_vectors` only when the sealed format changes on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

from tp_net.protocol.sealed import ReplayCache, open_request, seal_request, sealing_key_pair

OUT = Path(__file__).parent / "vectors" / "sealed.json"


def main() -> None:
    key_ikm = bytes(range(100, 132))
    key = sealing_key_pair(key_ikm)
    node_id = bytes(range(32))
    case = {
        "key_ikm": key_ikm.hex(),
        "public_key": key.public.hex(),
        "node_id": node_id.hex(),
        "now": 1_800_000_000,
        "nonce": bytes(range(16)).hex(),
        "ephemeral_ikm": bytes(range(200, 232)).hex(),
        "response_nonce": bytes(range(50, 82)).hex(),
        "document": {"model": "tiny", "messages": [{"role": "user", "content": "known answer"}], "seed": 7},
        "messages": [{"text": "hello"}, {"finish_reason": "stop"}],
    }
    made = seal_request(
        node_id,
        key.public,
        case["document"],
        1_800_000_000,
        nonce=bytes.fromhex(str(case["nonce"])),
        ephemeral_ikm=bytes.fromhex(str(case["ephemeral_ikm"])),
    )
    opened = open_request(
        made.data,
        node_id,
        [key],
        ReplayCache(),
        1_800_000_000,
        response_nonce=bytes.fromhex(str(case["response_nonce"])),
    )
    chunks = [opened.sealer.seal(message) for message in case["messages"]]  # type: ignore[attr-defined]
    chunks.append(opened.sealer.seal_final())
    case["sealed"] = made.data.hex()
    case["chunks"] = [chunk.hex() for chunk in chunks]
    OUT.write_text(json.dumps(case, indent=1) + "\n")


if __name__ == "__main__":
    main()
