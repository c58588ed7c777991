"""What makes a run a pure function of its seed, and the shared work that keeps large runs fast.

trio shuffles each batch of runnable tasks with a private module-level RNG, `trio._core._run._r`
(trio 0.35: `_r = random.Random()`), and orders timers that expire together by `id()` of their cancel
scopes. With `_ALLOW_DETERMINISTIC_SCHEDULING` (the switch trio keeps for Hypothesis) a batch is first
sorted by task creation order, then shuffled with `_r`: seeding `_r` from the run's seed makes the schedule
reproducible. Both names are private trio API, checked here so that a trio upgrade that renames them fails
loudly instead of silently making runs irreproducible.

Signature checks are pure: at scale, thousands of simulated machines verify the same directory document and
the same descriptors. `shared_verifier` is tp_crypto.signed.verify memoized for the run, given to every
machine's Trust (tp_net.protocol.directory.Trust.verify), so each distinct (key, domain, body, signature) is
checked once.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from contextlib import contextmanager

from trio._core import _run as trio_run

from tp_crypto import signed
from tp_crypto.signed import Verifier

VERIFY_CACHE_ENTRIES = 1 << 16


@contextmanager
def seeded_trio_scheduler(seed: int) -> Iterator[None]:
    rng = getattr(trio_run, "_r", None)
    if not isinstance(rng, random.Random) or not hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        raise RuntimeError("this trio version has no trio._core._run._r / _ALLOW_DETERMINISTIC_SCHEDULING")
    saved_state, saved_flag = rng.getstate(), trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    rng.seed(f"{seed}:trio-scheduler")
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        rng.setstate(saved_state)


def shared_verifier(enabled: bool) -> Verifier:
    """The signature check the run's machines share (their Trust's `verify`): tp_crypto.signed.verify,
    memoized for the run when `enabled`."""
    return functools.lru_cache(maxsize=VERIFY_CACHE_ENTRIES)(signed.verify) if enabled else signed.verify
