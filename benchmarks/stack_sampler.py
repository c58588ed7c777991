"""A sampling profiler for one long single-threaded run (no py-spy on this machine): a daemon thread looks at
the main thread's stack every `SAMPLE_INTERVAL_S` and counts where it is. Unlike cProfile it does not slow
the run down (one stack walk per interval), so a 10k-machine run can be profiled as it is measured.

Own time is the innermost Python frame: a C function (an AEAD call, a bytes search) counts for the Python
function that called it, unlike cProfile, which counts C built-ins on their own.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType

SAMPLE_INTERVAL_S = 0.01
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
    """Samples by phase: `phase(name)` starts counting into a new phase (e.g. after a run's warm-up)."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)
        self._target = threading.get_ident()  # the thread that builds the sampler: the one it samples
        self.phases: dict[str, _Counts] = {"start": _Counts()}
        self._counts = self.phases["start"]

    @property
    def samples(self) -> int:
        return sum(counts.samples for counts in self.phases.values())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def phase(self, name: str) -> None:
        self._counts = self.phases.setdefault(name, _Counts())

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            frame = sys._current_frames().get(self._target)  # the only way to sample another thread
            if frame is None:
                continue
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
