"""The traffic-analysis harness (benchmarks.traffic) on a few seeded conversations: its classifier wins at the
client's guard link when nothing is shaped (else the harness proves nothing), and is near chance with the
default defences."""

from __future__ import annotations

from benchmarks.traffic.__main__ import SETTINGS
from benchmarks.traffic.attack import auprc, chance
from benchmarks.traffic.capture import capture

PER_CLASS = 8
SEED = 3


def _guard_auprc(name: str) -> tuple[float, float]:
    setting = next(s for s in SETTINGS if s.name == name)
    conversations = capture(setting, per_class=PER_CLASS, seed=SEED)
    labels = [c.label for c in conversations]
    return auprc([c.guard for c in conversations], labels, seed=SEED, folds=3), chance(labels)


def test_the_classifier_wins_without_defences() -> None:
    score, base = _guard_auprc("none")
    assert score > 0.9 > base + 0.5


def test_the_default_defences_bring_it_near_chance() -> None:
    score, base = _guard_auprc("default (all three)")
    assert score < base + 0.15
