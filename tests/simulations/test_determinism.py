from __future__ import annotations

import random

import trio
from trio._core import _run as trio_run

import tp_net.directory
from simulations.determinism import seeded_trio_scheduler, shared_verification
from tp_crypto import signed
from tp_crypto.identity import Identity


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


def test_shared_verification_memoizes_and_is_undone_afterwards() -> None:
    identity = Identity(random.Random(3).randbytes(32))
    signature = signed.sign(identity, b"directory", b"body")
    original = tp_net.directory.verify
    with shared_verification(True):
        memoized = tp_net.directory.verify
        assert memoized is not original
        assert memoized(identity.node_id, b"directory", b"body", signature)
        assert not memoized(identity.node_id, b"directory", b"other", signature)
        assert memoized(identity.node_id, b"directory", b"body", signature)
    assert tp_net.directory.verify is original
    with shared_verification(False):
        assert tp_net.directory.verify is original
