"""A sampling profiler for one long single-threaded run (no py-spy on this machine): a profiling timer
(ITIMER_PROF, the process's CPU time) sends SIGPROF every `STACK_SAMPLE_INTERVAL_S` of CPU, and the
handler, run by the main thread between two bytecodes, counts where its stack is. Unlike cProfile it does
not slow the run down (one stack walk per interval), so a 10k-machine run can be profiled as it is measured.

A sampling thread would not do: it gets the GIL when the main thread lets it go, and trio's run loop lets
it go in its (zero-timeout) epoll call on every pass, so a thread's samples land there most of the time
(tried: 67-79 % of a 1k run's samples "in epoll"). A signal's handler runs wherever the CPU time went.

Own time is the innermost Python frame: a C function (an AEAD call, a bytes search) counts for the Python
function that called it, unlike cProfile, which counts C built-ins on their own.
"""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

STACK_SAMPLE_INTERVAL_S = 0.01
SAMPLE_TOP = 25
PACKAGES = ("trio", "tp_net", "tp_crypto", "tp_node", "tp_gateway", "simulations", "nacl", "cryptography")


def package_of(filename: str) -> str:
    return next((name for name in PACKAGES if f"/{name}/" in filename), "other")


def _where(frame: FrameType) -> str:
    code = frame.f_code
    return f"{'/'.join(code.co_filename.split('/')[-2:])}:{code.co_qualname}"


@dataclass
class _Counts:
    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)  # innermost frame
    inclusive: Counter[str] = field(default_factory=Counter)  # any frame on the stack (once per sample)
    own_packages: Counter[str] = field(default_factory=Counter)


class StackSampler:
    """Samples by phase: `phase(name)` starts counting into a new phase (e.g. after a run's warm-up).
    Start and stop it from the main thread (signal handlers run there)."""

    def __init__(self, interval_s: float = STACK_SAMPLE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self.phases: dict[str, _Counts] = {"start": _Counts()}
        self._counts = self.phases["start"]
        self._saved_handler: Any = None

    @property
    def samples(self) -> int:
        return sum(counts.samples for counts in self.phases.values())

    def start(self) -> None:
        self._saved_handler = signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self._interval_s, self._interval_s)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0.0)
        signal.signal(signal.SIGPROF, self._saved_handler)

    def phase(self, name: str) -> None:
        self._counts = self.phases.setdefault(name, _Counts())

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        if frame is None:
            return
        counts = self._counts
        counts.samples += 1
        counts.own[_where(frame)] += 1
        counts.own_packages[package_of(frame.f_code.co_filename)] += 1
        seen: set[str] = set()
        walk: FrameType | None = frame
        while walk is not None:
            seen.add(_where(walk))
            walk = walk.f_back
        counts.inclusive.update(seen)

    def summary(self) -> dict[str, object]:
        """Per phase, shares of its samples: own time by package, top functions by own and inclusive time."""
        return {"interval_s": self._interval_s, **{name: _shares(c) for name, c in self.phases.items()}}


def _shares(counts: _Counts) -> dict[str, object]:
    total = max(1, counts.samples)

    def top(counter: Counter[str], count: int) -> dict[str, float]:
        return {name: round(hits / total, 4) for name, hits in counter.most_common(count)}

    return {
        "samples": counts.samples,
        "own_by_package": top(counts.own_packages, len(PACKAGES) + 1),
        "own_top": top(counts.own, SAMPLE_TOP),
        "inclusive_top": top(counts.inclusive, SAMPLE_TOP * 2),
    }
