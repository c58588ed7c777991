"""Where a long stream's CPU goes: one stream through the client library, 3 relays and the node (fake
engine paced at 0.5 ms a token), and the CPU seconds each process used per token.

    .venv/bin/python -m benchmarks.stream_cost [--tokens 20000] [--py-spy PATH --profile-dir DIR]

With --py-spy, `py-spy record -f raw` samples the node, the guard and this process (the client) during the
stream and writes one collapsed-stack file per process into --profile-dir.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from benchmarks.network import bench_network
from benchmarks.suite import PACED_TOKEN_DELAY_MS
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_ws import WebSocketDialer

WARMUP_TOKENS = 200
PROFILE_RATE_HZ = 200
PROFILED = ("node", "guard", "client")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spies(args: argparse.Namespace, pids: dict[str, int], seconds: int) -> list[subprocess.Popen[bytes]]:
    if args.py_spy is None:
        return []
    args.profile_dir.mkdir(parents=True, exist_ok=True)
    record = [
        args.py_spy,
        "record",
        "-d",
        str(seconds),
        "-r",
        str(PROFILE_RATE_HZ),
        "-f",
        "raw",
        "--nonblocking",
    ]
    return [
        subprocess.Popen(
            [*record, "-p", str(pids[role]), "-o", str(args.profile_dir / f"{role}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role in PROFILED
    ]


async def run(args: argparse.Namespace) -> None:
    document = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": args.tokens}
    with tempfile.TemporaryDirectory() as state:
        async with (
            bench_network(Path(state), token_delay_ms=PACED_TOKEN_DELAY_MS) as bench,
            trio.open_nursery() as nursery,
        ):
            guard, middle, home = bench.relay_pids()
            pids = {"node": bench.network.node.process.pid, "middle relay": middle, "home relay": home}
            pids |= {"guard": guard, "client": os.getpid()}
            path = bench.node_path()
            async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
                circuit = await link.build_circuit(path)
                async for _ in circuit.request(INFERENCE_SERVICE, {**document, "max_tokens": WARMUP_TOKENS}):
                    pass
                before = {role: cpu_seconds(pid) for role, pid in pids.items()}
                spies = _spies(args, pids, int(args.tokens * PACED_TOKEN_DELAY_MS / 1000) + 1)
                start, messages = time.perf_counter(), 0
                async for _ in circuit.request(INFERENCE_SERVICE, document):
                    messages += 1
                elapsed = time.perf_counter() - start
                used = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
                for spy in spies:
                    await trio.to_thread.run_sync(spy.wait)
            nursery.cancel_scope.cancel()
    print(
        f"{args.tokens} tokens in {elapsed:.2f} s: {args.tokens / elapsed:.0f} tokens/s, {messages} messages"
    )
    for role, seconds in used.items():
        print(f"  {role:13} {seconds:6.2f} CPU s  {seconds / args.tokens * 1e6:5.0f} us/token")
    total = sum(used.values())
    per_token = total / args.tokens * 1e6
    print(f"  {'all':13} {total:6.2f} CPU s  {per_token:5.0f} us/token, {total / elapsed:.2f} cores busy")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_cost", description=__doc__)
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile the node, the guard, the client")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tp-stream-profile",
        help="(%(default)s)",
    )
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
