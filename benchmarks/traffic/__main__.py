"""`python -m benchmarks.traffic` (`make traffic`): AUPRC per observer position and defence setting, and what
each setting costs (docs/BENCHMARKS.md, "Traffic analysis")."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import replace

from benchmarks.traffic.attack import auprc, chance, permuted_auprc
from benchmarks.traffic.capture import Conversation, Setting, capture
from benchmarks.traffic.real import REAL_SHAPINGS, capture_real
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_DEFAULT, RESPONSE_SHAPING_OFF, ResponseShaping

FIRST_AT_ONCE = replace(RESPONSE_SHAPING_DEFAULT, first_at_once=True)
SETTINGS = (
    Setting("none", RESPONSE_SHAPING_OFF, pad_requests=False),
    Setting("request padding", RESPONSE_SHAPING_OFF, pad_requests=True),
    Setting("cadence", ResponseShaping(pad_to_bucket=False), pad_requests=False),
    Setting("cadence + response padding", RESPONSE_SHAPING_DEFAULT, pad_requests=False),
    Setting("default (all three)", RESPONSE_SHAPING_DEFAULT, pad_requests=True),
    Setting("all three, first token at once", FIRST_AT_ONCE, pad_requests=True),
)


def _bytes(conversation: Conversation) -> int:
    return sum(n for _, _, n in conversation.guard)


def measure(setting: Setting, *, per_class: int, seed: int, real: bool = False) -> dict[str, float]:
    """The in-process capture's figures, or (`real`) real processes' (no middle relay position there)."""
    conversations = (capture_real if real else capture)(setting, per_class=per_class, seed=seed)
    labels = [c.label for c in conversations]
    guard = [c.guard for c in conversations]
    return {
        "auprc_guard": auprc(guard, labels, seed=seed),
        "auprc_middle": math.nan if real else auprc([c.middle for c in conversations], labels, seed=seed),
        "chance": chance(labels),
        # Only for the small real-process runs (five more trainings per setting).
        "chance_permuted": permuted_auprc(guard, labels, seed=seed) if real else math.nan,
        "ttft_s": statistics.median(c.ttft_s for c in conversations),
        "total_s": statistics.median(c.total_s for c in conversations),
        "guard_bytes": statistics.median(_bytes(c) for c in conversations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=100, help="conversations per topic class")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--real",
        action="store_true",
        help="capture on real processes (benchmarks/traffic/real.py; wall time: use a small --per-class) "
        "for the settings tp-node's flags express",
    )
    args = parser.parse_args()
    settings = [s for s in SETTINGS if s.shaping in REAL_SHAPINGS] if args.real else SETTINGS
    results = {s.name: measure(s, per_class=args.per_class, seed=args.seed, real=args.real) for s in settings}
    base = results["none"]
    header = ("setting", "guard", "middle", "chance", "permuted", "+TTFT ms", "+total %", "bytes x")
    print("{:30} {:>6} {:>6} {:>6} {:>8} {:>9} {:>9} {:>8}".format(*header))
    for name, r in results.items():
        print(
            f"{name:30} {r['auprc_guard']:6.3f} {r['auprc_middle']:6.3f} {r['chance']:6.3f} "
            f"{r['chance_permuted']:8.3f} "
            f"{1000 * (r['ttft_s'] - base['ttft_s']):9.0f} {100 * (r['total_s'] / base['total_s'] - 1):9.1f} "
            f"{r['guard_bytes'] / base['guard_bytes']:8.2f}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
