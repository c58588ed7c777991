from __future__ import annotations

import dataclasses
import random

import trio
from trio._core import _run as trio_run

import tp_net.protocol.directory
from simulations.determinism import seeded_trio_scheduler, shared_verifier
from tests.tp_net.directory_factories import (
    T0,
    document,
    network_of,
    signed_document,
    signed_node,
    signed_relay,
)
from tp_crypto import signed
from tp_crypto.identity import Identity
from tp_net.protocol.descriptors import DESCRIPTOR_DOMAIN
from tp_net.protocol.directory import DOCUMENT_DOMAIN, verify_document


def _schedule(seed: int) -> list[int]:
    order: list[int] = []

    async def worker(index: int) -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
            order.append(index)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(8):
                nursery.start_soon(worker, index)

    with seeded_trio_scheduler(seed):
        trio.run(main)
    return order


def test_a_seeded_scheduler_repeats_its_interleaving_and_restores_trio() -> None:
    state, flag = trio_run._r.getstate(), trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    assert _schedule(1) == _schedule(1)
    assert len({tuple(_schedule(seed)) for seed in range(6)}) > 1
    assert trio_run._r.getstate() == state
    assert flag == trio_run._ALLOW_DETERMINISTIC_SCHEDULING


def test_the_shared_verifier_memoizes_and_reaches_verification_only_through_trust() -> None:
    identity = Identity(random.Random(3).randbytes(32))
    signature = signed.sign(identity, b"directory", b"body")
    memoized = shared_verifier(True)
    assert memoized is not signed.verify
    assert memoized(identity.node_id, b"directory", b"body", signature)
    assert not memoized(identity.node_id, b"directory", b"other", signature)
    assert memoized(identity.node_id, b"directory", b"body", signature)
    assert shared_verifier(False) is signed.verify
    # Nothing is patched: the verifier reaches the directory code as a Trust's `verify`.
    assert tp_net.protocol.directory.verify is signed.verify
    calls: list[bytes] = []

    def counting(node_id: bytes, domain: bytes, body: bytes, signature: bytes) -> bool:
        calls.append(domain)
        return signed.verify(node_id, domain, body, signature)

    authorities, trust = network_of(1, 1)
    counted = dataclasses.replace(trust, verify=counting)
    assert counted == trust  # the verifier is how, not what, a client trusts
    body = document([signed_relay(1), signed_node(1)]).encode()
    directory = verify_document(signed_document(body, authorities), counted, T0)
    assert len(directory.relays) == len(directory.nodes) == 1
    assert calls == [DOCUMENT_DOMAIN, DESCRIPTOR_DOMAIN, DESCRIPTOR_DOMAIN]
