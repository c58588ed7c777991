"""Idle CPU rows of the suite: what a relay, a GPU node and an authority cost while nothing is asked of them,
at the default directory period (PERIOD_S_DEFAULT, 300 s), in a local network of their own (5 relays, the
first 3 the authorities, one tp-node with the fake engine homed on the last relay; no gateway, no client).

A new network holds warm-up rounds every FIRST_ROUND_INTERVAL_S until the first aligned period's vote
(tp_node/authority_core.py), so the measurement waits for that period's document to be signed, then reads
each process's CPU seconds (/proc/PID/stat, user + system, 10 ms ticks) every `sample_s` over `window_s`.
A row's values are the samples' rates in % of one core; `details` hold the whole window's rate, and the
authorities' rate while they voted and signed the first aligned period (what a vote costs them).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from benchmarks.network import RELAY_COUNT
from benchmarks.results import Bound, Row, Target, measured
from tp_dev.local_network import LocalNetwork, local_network
from tp_dev.processes import StartedProcess
from tp_net.protocol.bootstrap_config import PERIOD_S_DEFAULT
from tp_node.authority_core import Schedule

AUTHORITY_COUNT = 3
LOG_LEVEL = "error"
IDLE_SETTLE_S = 10.0  # after the first aligned document is signed, before the window (relays fetch it)
RELAY_IDLE_PERCENT_MAX = 0.5  # of one core, issue 22: what a Raspberry Pi operator pays for an idle relay
RELAY_TARGET = Target(
    f"median <= {RELAY_IDLE_PERCENT_MAX:g} % of one core", (Bound("median", "<=", RELAY_IDLE_PERCENT_MAX),)
)
ROLES = {
    "relay": "idle CPU of a relay (not an authority, no node homed on it)",
    "node": "idle CPU of a GPU node (fake engine, no requests)",
    "authority": "idle CPU of an authority between its votes",
}


@dataclass(frozen=True)
class Wait:
    """How long the rows waited for the network's warm-up to end, and what it cost the authorities."""

    warmup_waited_s: float
    vote_cpu_percent: list[float]  # each authority, from its first aligned vote to the document + settle


def _cpu(process: StartedProcess) -> float:
    return process.cpu_seconds


def role_processes(network: LocalNetwork) -> dict[str, list[StartedProcess]]:
    """Each role's processes: the plain relay (index 3), the node, the authorities."""
    return {
        "relay": [network.relays[AUTHORITY_COUNT]],
        "node": [network.node],
        "authority": network.relays[:AUTHORITY_COUNT],
    }


async def wait_for_aligned_period(network: LocalNetwork, first: Schedule) -> Wait:
    """Sleep until the first aligned period's document is signed (+ IDLE_SETTLE_S), measuring the
    authorities' CPU from that period's vote on."""
    started = time.time()
    authorities = network.relays[:AUTHORITY_COUNT]
    _progress(f"waiting {first.sign_at + IDLE_SETTLE_S - started:.0f} s for the warm-up rounds to end")
    await trio.sleep(max(0.0, first.vote_at - time.time()))
    before = [_cpu(process) for process in authorities]
    vote_started = time.time()
    await trio.sleep(max(0.0, first.sign_at + IDLE_SETTLE_S - time.time()))
    elapsed = time.time() - vote_started
    vote = [(_cpu(process) - b) / elapsed * 100 for process, b in zip(authorities, before, strict=True)]
    return Wait(round(time.time() - started, 1), vote)


async def idle_cpu_rows(
    network: LocalNetwork, period_s: int, window_s: float, sample_s: float, wait: Wait | None
) -> list[Row]:
    """One row per role: the rates (% of one core) of its processes in each `sample_s` over `window_s`."""
    roles = role_processes(network)
    samples: dict[str, list[float]] = {role: [] for role in roles}
    first = {role: [_cpu(process) for process in processes] for role, processes in roles.items()}
    previous = {role: list(values) for role, values in first.items()}
    started = last = time.monotonic()
    while time.monotonic() - started < window_s:
        await trio.sleep(min(sample_s, window_s - (time.monotonic() - started)))
        now = time.monotonic()
        for role, processes in roles.items():
            current = [_cpu(process) for process in processes]
            samples[role] += [
                (c - p) / (now - last) * 100 for c, p in zip(current, previous[role], strict=True)
            ]
            previous[role] = current
        last = now
    elapsed = last - started
    rows = []
    for role, title in ROLES.items():
        window = [(c - f) / elapsed * 100 for c, f in zip(previous[role], first[role], strict=True)]
        details: dict[str, object] = {
            "period_s": period_s,
            "window_s": round(elapsed, 1),
            "sample_s": sample_s,
            "processes": len(roles[role]),
            "window_percent": window,
            "warmup_over": wait is not None,
        }
        if wait is not None:
            details["warmup_waited_s"] = wait.warmup_waited_s
            if role == "authority":
                details["vote_to_document_percent"] = wait.vote_cpu_percent
        rows.append(
            measured(
                f"idle_cpu_{role}",
                f"{title}, directory period {period_s} s",
                "% of one core",
                samples[role],
                target=RELAY_TARGET if role == "relay" else None,
                details=details,
            )
        )
    return rows


async def default_period_rows(state_dir: Path, window_s: float, sample_s: float) -> list[Row]:
    """The rows in a network of their own at the default directory period, after its warm-up."""
    first = Schedule.next_after(time.time(), PERIOD_S_DEFAULT)
    async with local_network(
        state_dir,
        relay_count=RELAY_COUNT,
        authority_count=AUTHORITY_COUNT,
        period_s=PERIOD_S_DEFAULT,
        log_level=LOG_LEVEL,
    ) as network:
        later = Schedule.next_after(time.time(), PERIOD_S_DEFAULT)  # an authority started after the vote
        wait = await wait_for_aligned_period(network, later if later.period > first.period else first)
        return await idle_cpu_rows(network, PERIOD_S_DEFAULT, window_s, sample_s, wait)


def _progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)
