"""The attacker: features of one trace, a random forest trained on labelled traces of the same setting (it
knows the defence), AUPRC of its cross-validated guesses (macro average over the classes, one against the
rest; chance is the share of the class, 1/classes here)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from benchmarks.traffic.capture import Record

GAP_BINS_S = np.logspace(-3, 1, 13)  # inter-message gaps, 1 ms .. 10 s
BURST_GAP_S = 0.05  # messages closer than this are one burst
TIME_BINS_S = np.linspace(0.0, 10.0, 21)  # when messages passed, relative to the first


def features(trace: Sequence[Record]) -> list[float]:
    out: list[float] = []
    for direction in (1, -1):
        times = np.array([t for t, d, _ in trace if d == direction]) if trace else np.zeros(0)
        sizes = np.array([n for _, d, n in trace if d == direction]) if trace else np.zeros(0)
        if times.size == 0:
            times, sizes = np.zeros(1), np.zeros(1)
        gaps = np.diff(times) if times.size > 1 else np.zeros(1)
        bursts = 1 + int(np.sum(gaps > BURST_GAP_S))
        out += [
            float(times.size),
            float(sizes.sum()),
            float(times[-1] - times[0]),
            float(times[0]),
            float(gaps.mean()),
            float(gaps.std()),
            float(np.percentile(gaps, 90)),
            float(bursts),
            float(times.size / bursts),
        ]
        out += list(np.histogram(gaps, GAP_BINS_S)[0].astype(float))
        out += list(np.histogram(times - times[0], TIME_BINS_S)[0].astype(float))
    return out


def auprc(traces: Sequence[Sequence[Record]], labels: Sequence[int], *, seed: int, folds: int = 5) -> float:
    """Macro one-vs-rest AUPRC of a random forest's cross-validated class probabilities."""
    x = np.array([features(trace) for trace in traces])
    y = np.array(labels)
    forest = RandomForestClassifier(n_estimators=150, random_state=seed, n_jobs=1)
    probabilities = cross_val_predict(
        forest, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )
    classes = sorted(set(labels))
    scores = [average_precision_score(y == c, probabilities[:, i]) for i, c in enumerate(classes)]
    return float(np.mean(scores))


def permuted_auprc(
    traces: Sequence[Sequence[Record]], labels: Sequence[int], *, seed: int, rounds: int = 5
) -> float:
    """The same attack with the labels shuffled (mean of `rounds`): what it scores by luck on this few
    traces, the chance level a small sample (a real-process run) is to be read against."""
    scores = []
    for index in range(rounds):
        shuffled = list(labels)
        random.Random(seed + index).shuffle(shuffled)
        scores.append(auprc(traces, shuffled, seed=seed))
    return float(np.mean(scores))


def chance(labels: Sequence[int]) -> float:
    """The AUPRC of a guesser that knows nothing (macro average of the class shares)."""
    classes = sorted(set(labels))
    return float(np.mean([labels.count(c) / len(labels) for c in classes]))
