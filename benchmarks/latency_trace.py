"""Latency anatomy of a warm request (issue 22): where the time to the first token goes, between and inside
the processes of the suite's network (gateway, guard, middle, the node's home relay, node).

    .venv/bin/python -m benchmarks.latency_trace [--requests 200] [--response-shaping off] [--out DIR]
        [--also-tokens 1] [--ab MODULE:ATTRIBUTE] [--analyse DIR]

`--ab` measures a change A/B, interleaved per request: every process of the network switches the module's
bool attribute on (SIGRTMIN+1) and off (SIGRTMIN+2) between requests, and each arm is reported apart with
the network's CPU per request (/proc).

Every process of the network runs with the latency tracer on (tp_net.trio.message_trace: TP_TRACE_DIR, and a
`sitecustomize` this script puts first on the children's PYTHONPATH that writes a process's records on
SIGUSR2 and forgets them on SIGUSR1). After warm-up requests the records are cleared, then `--requests`
streamed chats go to the gateway, each followed by the same request to the direct server (same HTTP app and
engine, no overlay). Each gateway request's first-token path is followed through the records:

client sends -> gateway's HTTP handler -> first request message sent -> (each hop: received, forwarded) ->
node: received, request decoded, handler started, first message, first response message sent -> (each hop
back) -> gateway: received, first chunk out of the overlay, first SSE bytes handed to the HTTP server ->
the client has the first content.

A connection is named by its two ports (all on 127.0.0.1), and the k-th message one end sent is the k-th the
other end received; inside a hop the message that forwards an arrival is the first one the process sends on
another connection after it (sends start after the arrival). The segments of one request add up to its TTFT
exactly; the table shows each segment's median and p95, and how close the medians' sum is to the median TTFT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks.gateway import HTTP_TIMEOUT_S, SHORT_MAX_TOKENS
from benchmarks.openai_http import Timing, chat_body, stream_chat
from tp_net.trio.message_trace import TRACE_DIR_ENV

WARMUP_REQUESTS = 20
TRACE_WRITE_S = 2.0
SWITCH_S = 0.02  # after signalling the processes to switch the --ab attribute, before the next request
# --ab: "module:attribute", a bool that SIGRTMIN+1 sets and SIGRTMIN+2 clears in every process of the network.
AB_ENV = "TP_TRACE_AB"
# A hop forwards within this long, or the match is taken as lost (another message, a broken record).
FORWARD_WITHIN_NS = 200_000_000
SITECUSTOMIZE = f"""
import importlib, os, signal
if ":" in os.environ.get("{AB_ENV}", ""):
    _module, _name = os.environ["{AB_ENV}"].split(":")
    _module = importlib.import_module(_module)
    signal.signal(signal.SIGRTMIN + 1, lambda *_: setattr(_module, _name, True))
    signal.signal(signal.SIGRTMIN + 2, lambda *_: setattr(_module, _name, False))
if os.environ.get("{TRACE_DIR_ENV}"):
    from tp_net.trio import message_trace
    signal.signal(signal.SIGUSR1, lambda *_: message_trace.clear())
    signal.signal(signal.SIGUSR2, lambda *_: message_trace.dump())
"""


# A message sent: (write start ns, write return ns, local port, peer port, sequence, bytes).
Send = tuple[int, int, int, int, int, int]


@dataclass
class Process:
    role: str
    received: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)  # -> (ns, bytes)
    sends: list[Send] = field(default_factory=list)
    marks: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def first_mark(self, name: str, after_ns: int) -> int | None:
        times = self.marks.get(name, [])
        index = bisect_left(times, after_ns)
        return times[index] if index < len(times) else None

    def next_send(self, after_ns: int, not_on: tuple[int, int] | None = None, size: int = 0) -> Send | None:
        """The first message sent after `after_ns` on another connection than `not_on`, of at least `size`
        bytes if one within FORWARD_WITHIN_NS is (forwarded cells keep their size, and may leave with others),
        else the first of any size."""
        index = bisect_left(self.sends, (after_ns,))
        soon = takewhile(lambda send: send[0] - after_ns <= FORWARD_WITHIN_NS, self.sends[index:])
        candidates = [send for send in soon if (send[2], send[3]) != not_on]
        picked = [send for send in candidates if send[5] >= size] or candidates
        return picked[0] if picked else None


def load(directory: Path, roles: dict[int, str]) -> tuple[dict[int, Process], dict[int, int]]:
    """Each process's records, and which process holds each local port."""
    processes: dict[int, Process] = {}
    port_owner: dict[int, int] = {}
    for path in directory.glob("trace-*.json"):
        data = json.loads(path.read_text())
        pid = int(data["pid"])
        if pid not in roles:
            continue
        process = Process(roles[pid])
        starts: dict[tuple[int, int, int], int] = {}
        for at, kind, local, peer, sequence, size in data["records"]:
            if kind == "recv":
                process.received[(local, peer, sequence)] = (at, size)
            elif kind == "send0":
                starts[(local, peer, sequence)] = at
            elif kind == "send":
                start = starts.get((local, peer, sequence), at)
                process.sends.append((start, at, local, peer, sequence, size))
            else:
                process.marks[kind].append(at)
            if local:
                port_owner[local] = pid
        process.sends.sort()
        for times in process.marks.values():
            times.sort()
        processes[pid] = process
    return processes, port_owner


HOP_NAMES = ("guard", "middle", "home relay")


class _Walk:
    """The points one request passed, in time order; a missing or out-of-order one raises LookupError."""

    def __init__(self, t0: int, processes: dict[int, Process], port_owner: dict[int, int]) -> None:
        self.segments: list[tuple[str, int]] = []
        self.writes: list[tuple[str, int]] = []  # (who, ns from a write's start to its return): off the path
        self.at = t0
        self.processes = processes
        self.port_owner = port_owner

    def reach(self, label: str, at: int | None) -> int:
        """The segment `label` ends at `at` (it began where the last one ended)."""
        if at is None or at < self.at:
            raise LookupError(label)
        self.segments.append((label, at - self.at))
        self.at = at
        return at

    def leave(self, who: str, process: Process, send: Send | None, work: str) -> Send:
        """`who` queues a message for its link's writer task (the work before it is `work`), the writer runs
        and starts writing it. The write's return is not on the path: the receiver may read the bytes before
        the writer's system call returns (the kernel wakes it from inside the write), so the crossing counts
        from the write's start."""
        if send is None:
            raise LookupError(f"{who}: no send")
        queued = self.reach(f"{who}: {work}", process.first_mark("pump_enqueue", self.at))
        self.reach(f"{who}: queued -> writer task runs", process.first_mark("pump_writer_runs", queued))
        self.reach(f"{who}: writer runs -> write starts (batch, seal, frame)", send[0])
        self.writes.append(
            (who.rsplit(" ", 1)[0] if who.endswith(("forward", "back")) else who, send[1] - send[0])
        )
        return send

    def cross(self, sent_by: str, message: Send, to: str) -> tuple[int, Process]:
        """The message arrives at the process holding its peer port: (pid, process)."""
        local, peer, sequence = message[2:5]
        pid = self.port_owner[peer]
        process = self.processes[pid]
        arrival = process.received.get((peer, local, sequence))
        self.reach(f"{sent_by} -> {to}: write, kernel, wake-up, read", arrival[0] if arrival else None)
        return pid, process

    def relays(self, sent_by: str, message: Send, names: tuple[str, ...], way: str, end: str) -> int:
        """Through the relays named `names` in order to `end`; returns the pid the last one forwarded to."""
        for name in names:
            _, process = self.cross(sent_by, message, name)
            forward = process.next_send(self.at, (message[3], message[2]), message[5])
            message = self.leave(
                f"{name} {way}", process, forward, "received -> queued (open, codec, hop, onion)"
            )
            sent_by = name
        return self.cross(sent_by, message, end)[0]


def anatomy(
    t0: int, first: int, *, gateway: int, node: int, processes: dict[int, Process], port_owner: dict[int, int]
) -> _Walk | None:
    """One request's walk: its segments (label, ns) from the client's send to its first content, and its
    writes; None when a record on its path is missing or the path is not guard, middle, home relay."""
    walk = _Walk(t0, processes, port_owner)
    gw, nd = processes[gateway], processes[node]
    try:
        walk.reach(
            "client -> gateway handler (httpx, kernel, hypercorn, Quart)", gw.first_mark("gw_http_in", t0)
        )
        walk.reach("gateway: body parsed, circuit claimed", gw.first_mark("gw_circuit", walk.at))
        message = walk.leave("gateway", gw, gw.next_send(walk.at), "request encoded, padded, onion, queued")
        pid = walk.relays("gateway", message, HOP_NAMES, "forward", "node")
        _expect(pid == node, "a path of three relays")
        walk.reach("node: received -> request decoded", nd.first_mark("svc_request", walk.at))
        walk.reach("node: handler task starts", nd.first_mark("svc_handler", walk.at))
        walk.reach("node: engine's first token", nd.first_mark("svc_message", walk.at))
        message = walk.leave("node", nd, nd.next_send(walk.at), "first message -> queued (cells, onion)")
        pid = walk.relays("node", message, HOP_NAMES[::-1], "back", "gateway")
        _expect(pid == gateway, "back at the gateway")
        walk.reach(
            "gateway: received -> first chunk out of the overlay", gw.first_mark("gw_first_chunk", walk.at)
        )
        walk.reach(
            "gateway: response headers out (Quart, hypercorn)", gw.first_mark("gw_body_start", walk.at)
        )
        walk.reach("gateway: first SSE event built", gw.first_mark("gw_first_yield", walk.at))
        walk.reach("gateway -> client has the first content (hypercorn, kernel, httpx)", first)
    except (LookupError, KeyError):
        return None
    return walk


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise LookupError(what)


def _timed(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[int, Timing]:
    """A streamed chat and the CLOCK_MONOTONIC ns it started at (perf_counter is that clock on Linux)."""
    t0 = time.monotonic_ns()
    return t0, stream_chat(client, url, body)


def _ms(ns: float) -> float:
    return ns / 1e6


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def report(walks: list[_Walk], ttft_ms: list[float], direct_ms: list[float], unmatched: int) -> str:
    requests = [walk.segments for walk in walks]
    lines = []
    matched_ttft = [sum(ns for _, ns in segments) / 1e6 for segments in requests]
    lines.append(
        f"requests {len(ttft_ms)}, followed end to end {len(requests)} ({unmatched} not: a record missing); "
        f"TTFT median {statistics.median(ttft_ms):.2f} ms (p95 {_p95(ttft_ms):.2f}), direct server "
        f"{statistics.median(direct_ms):.2f} ms, "
        f"added {statistics.median(ttft_ms) - statistics.median(direct_ms):.2f} ms"
    )
    lines.append("")
    lines.append("| segment | median ms | p95 ms | mean ms |")
    lines.append("| --- | --- | --- | --- |")
    by_label: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    for segments in requests:
        for label, ns in segments:
            if label not in by_label:
                order.append(label)
            by_label[label].append(_ms(ns))
    for label in order:
        values = by_label[label]
        median, p95, mean = statistics.median(values), _p95(values), statistics.fmean(values)
        lines.append(f"| {label} | {median:.3f} | {p95:.3f} | {mean:.3f} |")
    medians = sum(statistics.median(by_label[label]) for label in order)
    means = sum(statistics.fmean(by_label[label]) for label in order)
    lines.append("")
    lines.append(
        f"sum of the segments' medians {medians:.2f} ms, of their means {means:.2f} ms; "
        f"the followed requests' TTFT median {statistics.median(matched_ttft):.2f} ms, "
        f"mean {statistics.fmean(matched_ttft):.2f} ms"
    )
    groups: dict[str, list[float]] = defaultdict(list)
    for segments in requests:
        sums: dict[str, float] = defaultdict(float)
        for label, ns in segments:
            sums[_group(label)] += _ms(ns)
        for group, value in sums.items():
            groups[group].append(value)
    lines.append("")
    lines.append("| share | median ms per request | mean ms |")
    lines.append("| --- | --- | --- |")
    for group, values in sorted(groups.items()):
        lines.append(f"| {group} | {statistics.median(values):.3f} | {statistics.fmean(values):.3f} |")
    writes: dict[str, list[float]] = defaultdict(list)
    for walk in walks:
        for who, ns in walk.writes:
            writes[who].append(_ms(ns))
    lines.append("")
    lines.append(
        "WebSocket write (frame, os.write) from its start to its return, off the path, ms: "
        + ", ".join(
            f"{who} {statistics.median(values):.3f} (p95 {_p95(values):.3f})"
            for who, values in writes.items()
        )
    )
    return "\n".join(lines)


def _group(label: str) -> str:
    if label.startswith(("client", "gateway -> client", "-> client")):
        return "HTTP in and out (client, kernel, hypercorn)"
    if "->" in label and "kernel" in label:
        return "between processes (write, kernel, wake-up, read): 8 crossings"
    return f"in process: {label.split(':', maxsplit=1)[0].replace(' forward', '').replace(' back', '')}"


async def run(args: argparse.Namespace) -> None:
    from benchmarks.network import bench_network

    out = Path(args.out or tempfile.mkdtemp(prefix="tp-trace-"))
    out.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix="tp-trace-site-"))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    os.environ[TRACE_DIR_ENV] = str(out.resolve())
    if args.ab:
        os.environ[AB_ENV] = args.ab
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as state:
        async with bench_network(Path(state), response_shaping=args.response_shaping) as bench:
            os.environ.pop(TRACE_DIR_ENV)
            roles = {bench.gateway.process.pid: "gateway", bench.network.node.process.pid: "node"}
            roles[bench.direct.process.pid] = "direct"
            for index, relay in enumerate(bench.network.relays):
                roles[relay.process.pid] = f"relay {index + 1}"
            token_counts = [args.max_tokens, *([args.also_tokens] if args.also_tokens else [])]
            variants = [" on", " off"] if args.ab else [""]
            network = [pid for pid, role in roles.items() if role != "direct"]
            arms = [
                (f"{kind}{variant} {tokens}", url, chat_body(bench.model, tokens, stream=True), variant)
                for tokens in token_counts
                for kind, url, variant in [
                    *(("overlay", bench.gateway_url, variant) for variant in variants),
                    ("direct", bench.direct_url, ""),
                ]
            ]

            def measure(rounds: int) -> dict[str, list[tuple[int, float, float]]]:
                """`rounds` requests of each arm, in an order reversed every other round: (start ns, TTFT ms,
                the network's CPU ms during the request)."""
                samples: dict[str, list[tuple[int, float, float]]] = {arm[0]: [] for arm in arms}
                current = ""
                with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
                    for index in range(rounds):
                        for name, url, body, variant in arms if index % 2 == 0 else arms[::-1]:
                            if variant and variant != current:
                                number = signal.SIGRTMIN + (1 if variant == " on" else 2)
                                _signal_all(dict.fromkeys(network, ""), number)
                                time.sleep(SWITCH_S)
                                current = variant
                            cpu = _cpu_ms(network)
                            t0, timing = _timed(client, url, body)
                            samples[name].append((t0, timing.first_token_ms, _cpu_ms(network) - cpu))
                return samples

            await trio.to_thread.run_sync(measure, WARMUP_REQUESTS)
            _signal_all(roles, signal.SIGUSR1)
            samples = await trio.to_thread.run_sync(measure, args.requests)
            _signal_all(roles, signal.SIGUSR2)
            await trio.sleep(TRACE_WRITE_S)
    client = {
        "roles": {str(pid): role for pid, role in roles.items()},
        "tokens": token_counts,
        "variants": variants,
        "ab": args.ab,
        **samples,
    }
    (out / "client.json").write_text(json.dumps(client))
    print(f"records in {out}")
    print(analyse(out))


def analyse(out: Path) -> str:
    """The report from a run's records (its processes' trace files and the client's client.json)."""
    client = json.loads((out / "client.json").read_text())
    roles = {int(pid): role for pid, role in client["roles"].items()}
    processes, port_owner = load(out, roles)
    gateway = next(pid for pid, role in roles.items() if role == "gateway")
    node = next(pid for pid, role in roles.items() if role == "node")
    direct = processes[next(pid for pid, role in roles.items() if role == "direct")]
    lines = []
    for tokens, variant in [(t, v) for t in client["tokens"] for v in client.get("variants", [""])]:
        overlay, baseline = client[f"overlay{variant} {tokens}"], client[f"direct {tokens}"]
        followed = []
        for t0, first_ms, *_ in overlay:
            first = t0 + round(first_ms * 1e6)
            walk = anatomy(t0, first, gateway=gateway, node=node, processes=processes, port_owner=port_owner)
            if walk is not None:
                followed.append(walk)
        ttft = [sample[1] for sample in overlay]
        direct_ms = [sample[1] for sample in baseline]
        title = f"## {tokens}-token answers" + (f", {client['ab']}{variant}" if variant else "")
        cpu = [sample[2] for sample in overlay if len(sample) > 2]
        if cpu:
            title += f"; the network's CPU per request (mean of {len(cpu)}): {statistics.fmean(cpu):.2f} ms"
        lines += [title, report(followed, ttft, direct_ms, len(ttft) - len(followed))]
        if variant != client.get("variants", [""])[-1]:
            continue  # the direct server's report once per answer length, after the last arm
        walks = [
            walk
            for t0, first_ms, *_ in baseline
            if (walk := direct_anatomy(t0, t0 + round(first_ms * 1e6), direct)) is not None
        ]
        lines += [
            "",
            "The direct server:",
            report(walks, direct_ms, direct_ms, len(direct_ms) - len(walks)),
            "",
        ]
    return "\n".join(lines)


def direct_anatomy(t0: int, first: int, direct: Process) -> _Walk | None:
    """The same HTTP points in the direct server (its engine is in the process: no links)."""
    walk = _Walk(t0, {}, {})
    try:
        walk.reach("client -> handler (httpx, kernel, hypercorn, Quart)", direct.first_mark("gw_http_in", t0))
        walk.reach("handler -> first chunk from the engine", direct.first_mark("gw_first_chunk", walk.at))
        walk.reach("response headers out (Quart, hypercorn)", direct.first_mark("gw_body_start", walk.at))
        walk.reach("first SSE event built", direct.first_mark("gw_first_yield", walk.at))
        walk.reach("-> client has the first content (hypercorn, kernel, httpx)", first)
    except LookupError:
        return None
    return walk


def _cpu_ms(pids: list[int]) -> float:
    """User + system CPU of these processes so far, ms (Linux /proc, in clock ticks)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def _signal_all(roles: dict[int, str], number: int) -> None:
    for pid in roles:
        os.kill(pid, number)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_trace", description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--response-shaping", choices=("on", "off"), default="off")
    parser.add_argument(
        "--max-tokens", type=int, default=SHORT_MAX_TOKENS, help="tokens per answer (ttft's 16)"
    )
    parser.add_argument(
        "--ab",
        default="",
        help="MODULE:ATTRIBUTE, a bool switched in every process between requests (interleaved A/B)",
    )
    parser.add_argument("--also-tokens", type=int, default=0, help="interleave requests for this many tokens")
    parser.add_argument("--out", type=Path, default=None, help="where the processes write their records")
    parser.add_argument("--analyse", type=Path, default=None, help="only report on an earlier run's records")
    args = parser.parse_args()
    if args.analyse is not None:
        print(analyse(args.analyse))
        return
    trio.run(run, args)


if __name__ == "__main__":
    main()
