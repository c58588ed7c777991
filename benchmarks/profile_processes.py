"""cProfile of every process of the suite's fast network (gateway, 5 relays, node) while the ttft row runs:
where each process's CPU goes on the warm-pool path to the first token.

    .venv/bin/python -m benchmarks.profile_processes [--pairs 100] [--out DIR] [--top 12]

A `sitecustomize` module this script puts first on the children's PYTHONPATH (enabled by the
TP_BENCH_PROFILE_DIR variable) gives each process a cProfile that SIGUSR1 starts and SIGUSR2 stops and
writes to DIR/PID.prof: only the measured requests are profiled (after 10 warm-up pairs), not start-up.
Printed per role: the share of the process's busy time (profiled time less epoll's wait) under each top
function (own time), and of a few known layers (cumulative).
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

PROFILE_DIR_ENV = "TP_BENCH_PROFILE_DIR"
# SIGUSR1 starts the profile, SIGUSR2 stops it and writes DIR/PID.prof (only the measured requests count).
SITECUSTOMIZE = f'''
import cProfile, os, signal
_dir = os.environ.get("{PROFILE_DIR_ENV}")
if _dir:
    _profile = cProfile.Profile()

    def _dump(*_):
        _profile.disable()
        _profile.dump_stats(os.path.join(_dir, f"{{os.getpid()}}.prof"))

    signal.signal(signal.SIGUSR1, lambda *_: _profile.enable())
    signal.signal(signal.SIGUSR2, _dump)
'''
PROFILE_WRITE_S = 2.0
IDLE_FUNCTION = "poll"  # epoll's wait: cProfile counts wall time, so waiting is left out of the shares
# cumulative shares worth naming: (label, file fragment, function)
LAYERS = (
    ("onion layers (tp_crypto/onion.py)", "tp_crypto/onion.py", None),
    ("Noise transport (tp_crypto/noise*)", "tp_crypto/noise", None),
    ("codec (tp_net/protocol/codec.py)", "tp_net/protocol/codec.py", None),
    ("WebSocket channel send", "transport_ws.py", "send_message"),
    ("HTTP app (hypercorn/quart)", "/hypercorn/", None),
)


def own_time_top(path: Path, top: int) -> tuple[float, list[str]]:
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    waiting = sum(entry[2] for key, entry in raw.items() if key[2].startswith(f"<method '{IDLE_FUNCTION}'"))
    total = sum(entry[2] for entry in raw.values()) - waiting
    busy = {key: entry for key, entry in raw.items() if not key[2].startswith(f"<method '{IDLE_FUNCTION}'")}
    ranked = sorted(busy.items(), key=lambda item: item[1][2], reverse=True)[:top]
    lines = [f"  {entry[2] / total:6.1%} own  {Path(key[0]).name}:{key[1]} {key[2]}" for key, entry in ranked]
    for label, fragment, function in LAYERS:
        cumulative = max(
            (
                entry[3]
                for key, entry in raw.items()
                if fragment in key[0] and (function is None or key[2] == function)
            ),
            default=0.0,
        )
        lines.append(f"  {cumulative / total:6.1%} cum  {label} (largest single function)")
    return total, lines


async def run(args: argparse.Namespace) -> None:
    from benchmarks.gateway import ttft_row
    from benchmarks.network import bench_network

    args.out.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix="tp-profile-site-"))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    os.environ[PROFILE_DIR_ENV] = str(args.out.resolve())
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    roles: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as state:
        async with bench_network(Path(state), response_shaping=args.response_shaping) as bench:
            roles = {bench.gateway.process.pid: "gateway", bench.network.node.process.pid: "node"}
            for index, relay in enumerate(bench.network.relays):
                roles[relay.process.pid] = f"relay {index + 1}"
            await trio.to_thread.run_sync(ttft_row, bench, 2, 10)  # warm-up, unprofiled
            _signal_all(roles, signal.SIGUSR1)
            row = await trio.to_thread.run_sync(ttft_row, bench, args.pairs, 0)
            _signal_all(roles, signal.SIGUSR2)
            await trio.sleep(PROFILE_WRITE_S)
            print(f"ttft added median {row.median:.2f} ms, p95 {row.p95:.2f} ms (under cProfile)")
    # the gateway picks its pooled circuits' paths; only the last relay is known: the node's home
    path_roles = {"relay 1": "(authority)", "relay 2": "(authority)", "relay 3": "(authority)"}
    path_roles["relay 5"] = "(the node's home relay)"
    for pid, role in sorted(roles.items(), key=lambda item: item[1]):
        profile = args.out / f"{pid}.prof"
        if not profile.exists():
            print(f"{role}: no profile written", file=sys.stderr)
            continue
        total, lines = own_time_top(profile, args.top)
        print(f"{role} {path_roles.get(role, '')} ({total:.2f} s busy while profiled)")
        print("\n".join(lines))


def _signal_all(roles: dict[int, str], number: int) -> None:
    for pid in roles:
        os.kill(pid, number)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_processes", description=__doc__)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("bench-profiles"))
    parser.add_argument("--response-shaping", choices=("on", "off"), default="on")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
