"""Anatomy of a 3-hop circuit build (issue 22): where its milliseconds go, process by process.

    .venv/bin/python -m benchmarks.build_anatomy [--builds 100] [--show 1]

Starts the bench network's layout (5 relays, the first 3 its authorities, at the bench period; a tp-node on
the last), then builds circuits guard -> middle -> home relay (relays 3, 2, 4, as the suite's `circuit` row)
from a warm link, one at a time. Every process (the relays through a `sitecustomize` on PYTHONPATH, this
client directly) runs with probes wrapped around the trio edge and the circuit cores: nothing in the product
changes, and nothing is probed unless this benchmark starts the processes (off by default).

Each probe notes CLOCK_MONOTONIC (the same clock in every process) and the process's CPU time. A build is a
strict relay race (one process holds the circuit at a time), so the gaps between consecutive probes of all
processes, sorted by time, partition the build's wall time exactly; each gap is named by the probes either
side of it (`relay:write_end -> relay:woken` is the kernel and the scheduler between two processes).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ENV_DIR = "TP_BUILD_ANATOMY_DIR"  # set: this process records probes and writes them here at exit
EVENTS_MAX = 2_000_000  # probes kept per process (a few hundred bytes each)

Event = tuple[int, int, str, int]  # (monotonic ns, thread CPU ns, probe, detail)
_events: list[Event] = []


def _note(probe: str, detail: int = 0) -> None:
    if len(_events) < EVENTS_MAX:
        _events.append((time.monotonic_ns(), time.thread_time_ns(), probe, detail))


def _wrap_async(
    owner: Any, name: str, before: str | None, after: str | None, detail: Callable[..., int]
) -> None:
    original = getattr(owner, name)

    async def wrapped(*args: Any) -> Any:
        if before:
            _note(before)
        result = await original(*args)
        if after:
            _note(after, detail(args, result))
        return result

    setattr(owner, name, wrapped)


def _wrap_sync(owner: Any, name: str, before: str, after: str, detail: Callable[..., int]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _note(before, detail(args))
        result = original(*args, **kwargs)
        _note(after)
        return result

    setattr(owner, name, wrapped)


def install() -> None:
    """Wrap the probes around this process's transport, link, pump and circuit code."""
    import trio

    from tp_crypto import onion
    from tp_net.protocol import circuit_client, circuit_hop
    from tp_net.protocol.frames import Cell
    from tp_net.trio import link_pump, link_trio, transport_ws

    wait_readable: Callable[[Any], Awaitable[None]] = trio.lowlevel.wait_readable

    async def woken(socket: Any) -> None:
        await wait_readable(socket)
        _note("woken")

    # Only the WebSocket channel's hot path calls it through trio.lowlevel.
    trio.lowlevel.wait_readable = woken  # type: ignore[assignment]
    channel = transport_ws.WebSocketChannel
    _wrap_async(channel, "_read", None, "read", lambda args, data: len(data))
    _wrap_async(channel, "_write", "write_start", "write_end", lambda args, _: len(args[1]))

    def first_command(args: Any, frames: Any) -> int:
        cells = [frame.command for frame in frames if isinstance(frame, Cell)]
        return cells[0] if cells else -1

    _wrap_async(link_trio.Link, "receive", None, "opened", first_command)
    _wrap_async(link_trio.Link, "send", "send", None, lambda args, _: 0)
    _wrap_sync(link_pump.LinkPump, "enqueue", "enqueue", "enqueued", lambda args: 0)
    _wrap_sync(circuit_hop.HopCore, "receive_cell", "hop_cell", "hop_done", lambda args: args[2].command)
    _wrap_sync(
        circuit_client.ClientCircuit, "receive_cell", "client_cell", "client_done", lambda a: a[1].command
    )
    _wrap_sync(circuit_client.ClientCircuit, "__init__", "client_create", "client_created", lambda args: 0)
    _wrap_sync(onion.HopHandshakeClient, "first_message", "nk_first", "nk_first_done", lambda args: 0)
    _wrap_sync(onion.HopHandshakeClient, "finish", "nk_finish", "nk_finish_done", lambda args: 0)
    _wrap_sync(circuit_hop, "answer_hop_handshake", "nk_answer", "nk_answer_done", lambda args: 0)


def install_from_env() -> None:
    """For the sitecustomize this benchmark puts on the relays' PYTHONPATH."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return
    install()

    def dump() -> None:
        Path(directory, f"{os.getpid()}.trace").write_bytes(pickle.dumps(_events))

    atexit.register(dump)


# --- the run ------------------------------------------------------------------------------------------


Body = Callable[[Any, list[Any]], Awaitable[None]]  # (ClientLink, path) -> None


async def _run(body: Body, data_dir: Path) -> dict[int, str]:
    """The bench network's layout; `body` builds on a warm link to the guard of the suite's path."""
    import trio

    from benchmarks.network import BENCH_PERIOD_S, PATH_RELAY_INDEXES, RELAY_COUNT
    from tp_dev.local_network import local_network
    from tp_net.trio.client import ClientLink
    from tp_net.trio.transport_ws import WebSocketDialer

    async with local_network(
        data_dir, relay_count=RELAY_COUNT, log_level="error", period_s=BENCH_PERIOD_S
    ) as network:
        roles = {relay.process.pid: f"relay{index}" for index, relay in enumerate(network.relays)}
        roles[network.node.process.pid] = "node"
        roles[os.getpid()] = "client"
        path = [network.relay_hop(index) for index in PATH_RELAY_INDEXES]
        for index, name in zip(PATH_RELAY_INDEXES, ("guard", "middle", "home"), strict=True):
            roles[network.relays[index].process.pid] = name
        async with trio.open_nursery() as nursery:
            async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
                for _ in range(WARMUP_BUILDS):  # the relays' links to each other come up
                    await _one_build(link, path)
                await body(link, path)
            nursery.cancel_scope.cancel()
    return roles


WARMUP_BUILDS = 20


async def _one_build(link: Any, path: list[Any]) -> float:
    """One build's wall milliseconds; then the circuit goes and the guard's CREATE rate is respected."""
    import trio

    from tp_net.protocol.rate_limits import CLIENT_CREATE_RATE_PER_S

    _note("build_start")
    start = time.perf_counter()
    circuit = await link.build_circuit(path)
    elapsed = (time.perf_counter() - start) * 1000
    _note("build_end")
    circuit.destroy()
    await trio.sleep(1 / CLIENT_CREATE_RATE_PER_S)
    return elapsed


def _traced_builds(builds: int) -> Body:
    async def body(link: Any, path: list[Any]) -> None:
        for _ in range(builds):
            await _one_build(link, path)

    return body


def _load(trace_dir: Path, roles: dict[int, str]) -> list[tuple[int, int, str, str, int]]:
    """All processes' probes, time-sorted: (ns, cpu ns, role, probe, detail)."""
    merged = [(t, cpu, "client", probe, detail) for t, cpu, probe, detail in _events]
    for trace in trace_dir.glob("*.trace"):
        role = roles.get(int(trace.stem), f"pid{trace.stem}")
        merged += [
            (t, cpu, role, probe, detail) for t, cpu, probe, detail in pickle.loads(trace.read_bytes())
        ]
    merged.sort()
    return merged


def _builds(merged: list[tuple[int, int, str, str, int]]) -> list[list[tuple[int, int, str, str, int]]]:
    windows: list[list[tuple[int, int, str, str, int]]] = []
    current: list[tuple[int, int, str, str, int]] | None = None
    for event in merged:
        if event[2] == "client" and event[3] == "build_start":
            current = [event]
        elif current is not None:
            current.append(event)
            if event[2] == "client" and event[3] == "build_end":
                windows.append(current)
                current = None
    return windows


PATH_ROLES = ("client", "guard", "middle", "home")
_CRYPTO = {("nk_answer", "nk_answer_done"), ("nk_finish", "nk_finish_done"), ("nk_first", "nk_first_done")}
_CORE_EDGES = {"hop_cell", "client_cell", "hop_done", "client_done", "nk_answer", "nk_answer_done"}
_CORE_EDGES |= {"nk_finish", "nk_finish_done", "nk_first", "nk_first_done", "client_create", "client_created"}
CATEGORIES = {
    "crypto": "NK hop handshakes (X25519, HKDF, hashing)",
    "core": "circuit cores around them (onion layers, cell codec, checks, build start)",
    "receive": "link receive: WebSocket parse, Noise decrypt, frame decode",
    "dispatch": "from a decoded message to the circuit core, and the core's cells into the link queue",
    "writer": "task switch: waking the link's writer task",
    "seal": "link send: Noise encrypt, frame encode, WebSocket framing",
    "syscalls": "read and write system calls (write includes loopback delivery)",
    "between": "between processes: kernel wake-up, scheduling, waiting for a core",
    "other": "other gaps",
}


_PAIRS = {pair: "crypto" for pair in _CRYPTO} | {
    ("write_start", "write_end"): "syscalls",
    ("woken", "read"): "syscalls",
    ("read", "opened"): "receive",
    ("enqueued", "send"): "writer",
    ("send", "write_start"): "seal",
    ("build_start", "client_create"): "core",
}
_DISPATCH_FROM = {"opened", "hop_done", "client_done", "enqueue", "client_created"}
_DISPATCH_TO = {"hop_cell", "client_cell", "enqueue", "enqueued"}


def _category(previous: tuple[int, int, str, str, int], event: tuple[int, int, str, str, int]) -> str:
    pair = (previous[3], event[3])
    if previous[2] != event[2]:
        category = "between"
    elif pair in _PAIRS:
        category = _PAIRS[pair]
    elif pair[0] in _CORE_EDGES and pair[1] in _CORE_EDGES:
        category = "core"
    elif pair[0] in _DISPATCH_FROM and pair[1] in _DISPATCH_TO:
        category = "dispatch"
    else:
        category = "other"
    return category


def analyse(merged: list[tuple[int, int, str, str, int]], show: int) -> None:
    builds = _builds([event for event in merged if event[2] in PATH_ROLES])
    totals = [(w[-1][0] - w[0][0]) / 1e6 for w in builds]
    median = statistics.median(totals)
    print(
        f"{len(builds)} builds: median {median:.2f} ms, p95 {sorted(totals)[int(0.95 * len(totals))]:.2f} ms"
    )
    typical = [w for w, total in zip(builds, totals, strict=True) if total <= median * 1.25]
    print(f"typical builds (within 1.25 x the median): {len(typical)}, their mean per build:")
    walls: dict[str, float] = defaultdict(float)
    cpus: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    gaps: dict[str, float] = defaultdict(float)
    for window in typical:
        for previous, event in itertools.pairwise(window):
            category = _category(previous, event)
            walls[category] += (event[0] - previous[0]) / 1e3 / len(typical)
            counts[category] += 1 / len(typical)
            if previous[2] == event[2]:
                cpus[category] += (event[1] - previous[1]) / 1e3 / len(typical)
            name = f"{previous[2]}:{previous[3]} -> {event[2]}:{event[3]}"
            gaps[name] += (event[0] - previous[0]) / 1e3 / len(typical)
    held: dict[str, float] = defaultdict(float)  # wall time between two probes of the same process
    for window in typical:
        for previous, event in itertools.pairwise(window):
            if previous[2] == event[2]:
                held[event[2]] += (event[0] - previous[0]) / 1e3 / len(typical)
    print("time each process holds the build (between two of its own probes):")
    print("  " + ", ".join(f"{role} {held[role]:.0f} us" for role in PATH_ROLES))
    whole = sum(walls.values())
    print(f"{'category':<88} {'wall us':>8} {'cpu us':>7} {'gaps':>5} {'share':>6}")
    for category, title in CATEGORIES.items():
        print(
            f"{title:<88} {walls[category]:8.0f} {cpus[category]:7.0f} {counts[category]:5.1f}"
            f" {walls[category] / whole:6.1%}"
        )
    print(f"{'total':<88} {whole:8.0f}")
    print("\nlargest gaps (mean us per typical build):")
    for name, wall in sorted(gaps.items(), key=lambda item: -item[1])[:30]:
        print(f"  {wall:7.0f}  {name}  [{_category(*_parse_gap(name))}]")
    for window in builds[len(builds) // 2 : len(builds) // 2 + show]:
        print("\none build (middle of the run), probe by probe:")
        start = window[0][0]
        last_cpu: dict[str, int] = {}
        for t, cpu_ns, role, probe, detail in window:
            used = (cpu_ns - last_cpu[role]) / 1e3 if role in last_cpu else 0.0
            last_cpu[role] = cpu_ns
            print(f"{(t - start) / 1e3:9.0f} us  {role:<7} {probe:<15} {detail:>6}  cpu +{used:.0f} us")


def _parse_gap(name: str) -> tuple[tuple[int, int, str, str, int], tuple[int, int, str, str, int]]:
    before, after = name.split(" -> ")
    (role_a, probe_a), (role_b, probe_b) = before.split(":"), after.split(":")
    return (0, 0, role_a, probe_a, 0), (0, 0, role_b, probe_b, 0)


async def in_memory_profile(builds: int, top: int) -> None:
    """The same builds on the in-memory transport in this one process (no sockets, no other process): CPU
    per build and, under cProfile, the functions it goes to (own time, then grouped by module)."""
    import cProfile
    import pstats

    import trio

    from tp_net.protocol.rate_limits import CLIENT_CREATE_RATE_PER_S
    from tp_net.trio.client import ClientLink
    from tp_node.testing.memory_network import in_process_network

    profile = cProfile.Profile()
    walls, cpus = [], []
    async with in_process_network() as net:
        path = net.path()[:3]
        async with ClientLink.connect(net.network.dialer(), path[0]) as link:
            for index in range(20 + builds):
                measured = index >= 20
                start, cpu = time.perf_counter(), time.process_time()
                if measured:
                    profile.enable()
                circuit = await link.build_circuit(path)
                if measured:
                    profile.disable()
                    walls.append((time.perf_counter() - start) * 1000)
                    cpus.append((time.process_time() - cpu) * 1000)
                circuit.destroy()
                await trio.sleep(1 / CLIENT_CREATE_RATE_PER_S)
    print(
        f"in-memory 3-hop build, one process: wall median {statistics.median(walls):.2f} ms, "
        f"CPU median {statistics.median(cpus):.2f} ms (under cProfile)"
    )
    stats = pstats.Stats(profile)
    by_module: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = filename.split("site-packages/")[-1].split("/wt/build/")[-1]
        by_module[key] += own
        total += own
    print(f"own time by file, per build (total {total / builds * 1000:.2f} ms):")
    for key, own in sorted(by_module.items(), key=lambda item: -item[1])[:top]:
        print(f"  {own / builds * 1e6:7.0f} us  {own / total:5.1%}  {key}")
    stats.sort_stats("tottime").print_stats(top)


def x25519_ab(rounds: int, per_round: int = 500) -> None:
    """CPU per X25519 operation as a hop handshake uses it (a fresh key pair, one DH with a peer's raw
    public key), pynacl against cryptography, rounds alternating."""
    import nacl.bindings
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    peer = nacl.bindings.crypto_scalarmult_base(os.urandom(32))

    def with_nacl() -> None:
        private = os.urandom(32)
        nacl.bindings.crypto_scalarmult_base(private)
        nacl.bindings.crypto_scalarmult(private, peer)

    def with_cryptography() -> None:
        private = X25519PrivateKey.generate()
        private.public_key().public_bytes_raw()
        private.exchange(X25519PublicKey.from_public_bytes(peer))

    results: dict[str, list[float]] = {"pynacl": [], "cryptography": []}
    arms = (("pynacl", with_nacl), ("cryptography", with_cryptography))
    for index in range(rounds):
        for name, arm in arms if index % 2 == 0 else arms[::-1]:
            start = time.thread_time()
            for _ in range(per_round):
                arm()
            results[name].append((time.thread_time() - start) / per_round * 1e6)
    for name, values in results.items():
        print(f"{name}: key pair + one DH, median {statistics.median(values):.1f} us (min {min(values):.1f})")


def state_table_ab(rounds: int, per_round: int = 20_000) -> None:
    """CPU per transition lookup of the steps a relay takes per relayed cell, the int-keyed table (as kept)
    against the (state, event)-keyed dict, rounds alternating."""
    from tp_net.protocol.hop_states import TRANSITIONS, HopEvent, HopState, transition

    pairs = [
        (HopState.RELAYING, HopEvent.RELAY_FROM_CLIENT),
        (HopState.RELAYING, HopEvent.NOT_FOR_THIS_HOP),
        (HopState.RELAYING, HopEvent.RELAY_FROM_NEXT),
    ] * (per_round // 3)

    def int_keyed() -> None:
        for state, event in pairs:
            transition(state, event)

    def enum_keyed() -> None:
        for state, event in pairs:
            step = TRANSITIONS.get((state, event))
            if step is None:
                raise AssertionError

    results: dict[str, list[float]] = {"int-keyed": [], "enum-tuple dict": []}
    arms = (("int-keyed", int_keyed), ("enum-tuple dict", enum_keyed))
    for index in range(rounds):
        for name, arm in arms if index % 2 == 0 else arms[::-1]:
            start = time.thread_time()
            arm()
            results[name].append((time.thread_time() - start) / len(pairs) * 1e6)
    for name, values in results.items():
        print(f"{name}: {statistics.median(values):.3f} us per lookup (min {min(values):.3f})")


def extend_at_a_relay(rounds: int) -> None:
    """One EXTEND carried out at a guard (HopCore alone, sans-IO, the link to the next hop up): Python calls
    under cProfile, and CPU per EXTEND over `rounds` fresh circuits."""
    import cProfile
    import pstats
    import random

    from tp_crypto.identity import Identity
    from tp_crypto.noise import generate_keypair
    from tp_net.protocol.cells import new_circuit_id
    from tp_net.protocol.circuit_client import ClientCircuit, HopInfo
    from tp_net.protocol.circuit_hop import HopCore
    from tp_net.protocol.frames import Cell
    from tp_net.protocol.hop_outputs import SendCell

    guard_key, guard_public = generate_keypair()
    _, middle_public = generate_keypair()
    guard = HopInfo(Identity.generate().node_id, guard_public, "ws://127.0.0.1:1/")
    middle = HopInfo(Identity.generate().node_id, middle_public, "ws://127.0.0.1:2/")

    def guard_with_an_extend() -> tuple[HopCore, Cell]:
        core = HopCore([guard_key], rng=random.Random(1), can_extend=True)
        core.link_up(1, None, we_dialed=False, peer_host="127.0.0.1")  # the client
        core.link_up(2, middle.node_id, we_dialed=True)  # the middle, linked already
        client = ClientCircuit([guard, middle], new_circuit_id(random.Random(2), link_dialer=True, in_use={}))
        (created,) = core.receive_cell(1, client.outgoing_cells()[0], 0.0)
        assert isinstance(created, SendCell)
        client.receive_cell(created.cell)
        (extend,) = client.outgoing_cells()
        return core, extend

    core, extend = guard_with_an_extend()
    profile = cProfile.Profile()
    profile.enable()
    core.receive_cell(1, extend, 0.0)
    profile.disable()
    print(f"one EXTEND at a guard: {pstats.Stats(profile).total_calls} Python calls")  # type: ignore[attr-defined]
    cpu = []
    for _ in range(rounds):
        core, extend = guard_with_an_extend()
        start = time.thread_time()
        core.receive_cell(1, extend, 0.0)
        cpu.append((time.thread_time() - start) * 1e6)
    print(
        f"CPU per EXTEND at a guard: median {statistics.median(cpu):.1f} us (min {min(cpu):.1f}), n {rounds}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.build_anatomy", description=__doc__)
    parser.add_argument("--builds", type=int, default=100)
    parser.add_argument("--show", type=int, default=1, help="builds to print probe by probe")
    parser.add_argument("--in-memory", action="store_true", help="one process, memory transport, cProfile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--x25519", action="store_true", help="pynacl against cryptography, CPU per op")
    parser.add_argument("--extend", action="store_true", help="one EXTEND at a guard: calls and CPU")
    parser.add_argument("--state-table", action="store_true", help="int-keyed against enum-keyed lookups")
    args = parser.parse_args()
    import trio

    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.extend:
        extend_at_a_relay(args.builds)
    elif args.state_table:
        state_table_ab(args.builds)
    elif args.x25519:
        x25519_ab(args.builds)
    elif args.in_memory:
        trio.run(in_memory_profile, args.builds, args.top)
    else:
        _anatomy(args.builds, args.show)
    print(f"load average at end: {os.getloadavg()}", flush=True)


def _anatomy(builds: int, show: int) -> None:
    import trio

    with tempfile.TemporaryDirectory() as temp:
        hooks, traces, data = Path(temp, "hooks"), Path(temp, "traces"), Path(temp, "data")
        for directory in (hooks, traces, data):
            directory.mkdir()
        (hooks / "sitecustomize.py").write_text(
            "import benchmarks.build_anatomy as anatomy\nanatomy.install_from_env()\n"
        )
        root = Path(__file__).resolve().parent.parent
        os.environ["PYTHONPATH"] = os.pathsep.join([str(hooks), str(root), os.environ.get("PYTHONPATH", "")])
        os.environ[ENV_DIR] = str(traces)
        install()
        roles = trio.run(_run, _traced_builds(builds), data)
        merged = _load(traces, roles)
    _events.clear()
    analyse(merged, show)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
