"""What makes a run a pure function of its seed, and the shared work that keeps large runs fast.

trio shuffles each batch of runnable tasks with a private module-level RNG, `trio._core._run._r`
(trio 0.35: `_r = random.Random()`), and orders timers that expire together by `id()` of their cancel
scopes. With `_ALLOW_DETERMINISTIC_SCHEDULING` (the switch trio keeps for Hypothesis) a batch is first
sorted by task creation order, then shuffled with `_r`: seeding `_r` from the run's seed makes the schedule
reproducible. Both names are private trio API, checked here so that a trio upgrade that renames them fails
loudly instead of silently making runs irreproducible.

Signature checks are pure: at scale, thousands of simulated machines verify the same directory document and
the same descriptors. `shared_verification` memoizes tp_crypto.signed.verify for the run (in the modules
that imported it), so each distinct (key, domain, body, signature) is checked once.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from trio._core import _run as trio_run

import tp_net.descriptors
import tp_net.directory
import tp_node.authority_core
from tp_crypto import signed

VERIFY_CACHE_ENTRIES = 1 << 16
_VERIFY_USERS: tuple[ModuleType, ...] = (tp_net.descriptors, tp_net.directory, tp_node.authority_core)


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


@contextmanager
def shared_verification(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    cached = functools.lru_cache(maxsize=VERIFY_CACHE_ENTRIES)(signed.verify)
    saved = [module.verify for module in _VERIFY_USERS]
    for module in _VERIFY_USERS:
        module.verify = cached  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in zip(_VERIFY_USERS, saved, strict=True):
            module.verify = original  # type: ignore[attr-defined]
