"""The benchmark suite (`make bench`): every row of issue 10 against its target, measured with separate OS
processes on 127.0.0.1, written to bench-results.json and printed as a table.

    .venv/bin/python -m benchmarks.suite [--quick] [--only NAME[,NAME]] [--out FILE] [--model PATH|tiny]

Rows (NAME): ttft, sealed_ttft, latency, stream, stream_http, circuit, forward, concurrent, idle, request_cpu,
saturation, idle_cpu, gpu. Rows that need the same processes share them: `fast` (5 relays, a tp-node with the
fake engine, tp-gateway, the direct server) for ttft, sealed_ttft, latency, circuit, idle, request_cpu and
saturation; `paced` (the same with the fake engine paced at 0.5 ms a token) for stream, stream_http and
concurrent; forward starts its own relay; idle_cpu its own network at the default directory period (it waits
up to ~6 minutes for the network's warm-up rounds to end); gpu its own network with a llama node (only with
--model). --response-shaping off starts the fast and paced nodes without response shaping.
--quick takes a few samples of each row and measures all network rows in the paced network (idle_cpu there
too, over 2 s, without waiting for a warm-up at the bench period).
Ratios are measured side by side, A/B interleaved, in the same run. The exit status is 1 when a row
failed to run (its error is in the file), not when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from benchmarks.results import RATIO_TARGET, Row, markdown_table, not_measured, run_metadata, text_table

if TYPE_CHECKING:  # imports httpx, which a device run of the gpu row may lack
    from benchmarks.network import BenchNetwork

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("bench-results.json")
PACED_TOKEN_DELAY_MS = 0.5  # 2,000 tokens/s, as the issue asks
ROW_NAMES = (
    "ttft",
    "sealed_ttft",
    "latency",
    "stream",
    "stream_http",
    "circuit",
    "forward",
    "concurrent",
    "idle",
    "request_cpu",
    "saturation",
    "idle_cpu",
    "gpu",
)
PHASES = {
    "fast": ("ttft", "sealed_ttft", "latency", "circuit", "idle", "request_cpu", "saturation"),
    "paced": ("stream", "stream_http", "concurrent"),
    "forward": ("forward",),
    "idle_cpu": ("idle_cpu",),
    "gpu": ("gpu",),
}
# --quick starts one network, not two (a local network takes 15-40 s to form its first directory here).
QUICK_PHASES = {
    "paced": PHASES["fast"] + PHASES["paced"] + PHASES["idle_cpu"],
    "forward": ("forward",),
    "gpu": ("gpu",),
}
NO_GPU_REASON = (
    "no GPU device lent to this session; the device run is benchmarks/gpu_device.sh "
    "(python -m benchmarks.suite --only gpu --model PATH)"
)
TITLES = {
    "ttft": ("time to first token added by gateway + 3 relays + node", "ms"),
    "sealed_ttft": ("time to first token added by sealing, same gateway and path", "ms"),
    "latency": ("request latency, sequential short chat completions, gateway + 3 relays", "ms"),
    "stream": ("tokens/s of one long stream through 3 relays + node", "tokens/s"),
    "stream_http": ("tokens/s of one long stream over HTTP, gateway + 3 relays + node", "tokens/s"),
    "circuit": ("3-hop circuit build", "ms"),
    "forward": ("cells forwarded by one relay process per CPU second", "cells/s"),
    "concurrent": ("concurrent streams through one 3-relay path: relay peak RSS", "MB"),
    "idle": ("idle relay RSS", "MB"),
    "request_cpu": ("CPU per request added by the overlay", "ms"),
    "saturation": ("requests/s at saturation per core of the whole network", "requests/s per core"),
    "idle_cpu": ("idle CPU of a relay, a node and an authority", "% of one core"),
    "gpu": ("streamed tokens/s through the overlay vs llama-cpp-python directly (GPU)", "tokens/s"),
}


@dataclass(frozen=True)
class Sizes:
    pairs: int  # ttft pairs
    requests: int  # latency pairs
    warmup: int
    stream_pairs: int
    stream_tokens: int
    builds: int
    forward_megabytes: float
    forward_windows: int
    streams: int
    stream_tokens_concurrent: int
    idle_settle_s: float
    gpu_rounds: int
    gpu_tokens: int
    cpu_requests: int  # request_cpu: requests of each arm
    client_levels: tuple[int, ...]  # saturation
    level_s: float  # saturation: seconds at each level
    idle_window_s: float  # idle_cpu
    idle_sample_s: float


FULL = Sizes(
    200, 200, 10, 8, 2000, 200, 10.0, 5, 200, 200, 10.0, 10, 300,
    200, (1, 2, 4, 8, 16, 32), 10.0, 60.0, 10.0,
)  # fmt: skip
QUICK = Sizes(5, 5, 1, 1, 100, 5, 1.0, 1, 20, 20, 1.0, 1, 32, 10, (1, 4), 1.0, 2.0, 1.0)


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    only: tuple[str, ...]
    model: str | None
    n_gpu_layers: int
    response_shaping: str = "on"


RowRunner = Callable[[], Awaitable[list[Row]]]
RUN_ERRORS: list[str] = []  # what went wrong outside a row (reported in the results file)
PHASE_SECONDS: dict[str, float] = {}  # wall time of each phase: starting its processes, its rows, stopping


async def _fast_phase(options: Options, wanted: set[str]) -> dict[str, list[Row]]:
    return await _in_network(0.0, functools.partial(_network_rows, options), wanted, options)


async def _paced_phase(options: Options, wanted: set[str]) -> dict[str, list[Row]]:
    return await _in_network(PACED_TOKEN_DELAY_MS, functools.partial(_network_rows, options), wanted, options)


async def _idle_cpu_phase(options: Options, wanted: set[str]) -> dict[str, list[Row]]:
    from benchmarks.idle_cpu import default_period_rows

    sizes = options.sizes

    async def rows() -> list[Row]:
        with tempfile.TemporaryDirectory() as state:
            return await default_period_rows(Path(state), sizes.idle_window_s, sizes.idle_sample_s)

    return await _run_rows({"idle_cpu": rows}, wanted)


def _network_rows(options: Options, bench: BenchNetwork) -> dict[str, RowRunner]:
    from benchmarks import gateway, overlay_stream, resources, sealed
    from benchmarks.circuits import circuit_rows
    from benchmarks.idle_cpu import idle_cpu_rows
    from benchmarks.network import BENCH_PERIOD_S
    from benchmarks.request_cost import request_cpu_row
    from benchmarks.saturation import saturation_rows

    sizes = options.sizes
    return {
        "ttft": _in_thread(gateway.ttft_row, bench, sizes.pairs, sizes.warmup),
        "sealed_ttft": _in_thread(sealed.sealed_ttft_row, bench, sizes.pairs, sizes.warmup),
        "latency": _in_thread(gateway.latency_row, bench, sizes.requests, sizes.warmup),
        "stream": _one(overlay_stream.stream_row, bench, sizes.stream_pairs, sizes.stream_tokens),
        "stream_http": _in_thread(gateway.stream_http_row, bench, sizes.stream_pairs, sizes.stream_tokens),
        "circuit": lambda: circuit_rows(bench.node_path(), sizes.builds),
        "concurrent": _one(resources.concurrent_row, bench, sizes.streams, sizes.stream_tokens_concurrent),
        "idle": _one(resources.idle_row, bench, sizes.idle_settle_s),
        "request_cpu": _one(request_cpu_row, bench, sizes.cpu_requests),
        "saturation": lambda: saturation_rows(bench, sizes.client_levels, sizes.level_s),
        # only --quick measures idle CPU here (at the bench period, no warm-up wait): see _idle_cpu_phase
        "idle_cpu": lambda: idle_cpu_rows(
            bench.network, BENCH_PERIOD_S, sizes.idle_window_s, sizes.idle_sample_s, None
        ),
    }


async def _in_network(
    token_delay_ms: float,
    runners: Callable[[BenchNetwork], dict[str, RowRunner]],
    wanted: set[str],
    options: Options,
) -> dict[str, list[Row]]:
    """The rows, measured in a fresh bench network; a failure while stopping its processes keeps the rows
    already measured and is reported as a run error."""
    from benchmarks.network import bench_network

    results: dict[str, list[Row]] = {}
    try:
        with tempfile.TemporaryDirectory() as state:
            async with bench_network(
                Path(state), token_delay_ms=token_delay_ms, response_shaping=options.response_shaping
            ) as bench:
                results = await _run_rows(runners(bench), wanted)
    except Exception as exc:
        if not results:
            raise
        RUN_ERRORS.append(f"stopping the processes: {type(exc).__name__}: {exc}")
        traceback.print_exception(exc, file=sys.stderr)
    return results


async def _forward_phase(options: Options, wanted: set[str]) -> dict[str, list[Row]]:
    from benchmarks.circuits import forward_row

    sizes = options.sizes
    return await _run_rows(
        {"forward": _one(forward_row, sizes.forward_megabytes, sizes.forward_windows)}, wanted
    )


async def _gpu_phase(options: Options, wanted: set[str]) -> dict[str, list[Row]]:
    if options.model is None:
        title, unit = TITLES["gpu"]
        return {"gpu": [not_measured("gpu", title, unit, NO_GPU_REASON, RATIO_TARGET)]}
    from benchmarks.gpu import gpu_row  # imports llama_cpp: only when asked for

    sizes = options.sizes
    runner = _one(gpu_row, options.model, sizes.gpu_rounds, sizes.gpu_tokens, options.n_gpu_layers)
    return await _run_rows({"gpu": runner}, wanted)


PHASE_RUNNERS: dict[str, Callable[[Options, set[str]], Awaitable[dict[str, list[Row]]]]] = {
    "fast": _fast_phase,
    "paced": _paced_phase,
    "forward": _forward_phase,
    "idle_cpu": _idle_cpu_phase,
    "gpu": _gpu_phase,
}


def _in_thread(function: Callable[..., Row], *args: Any) -> RowRunner:
    """A blocking row (httpx) run on a worker thread, so the trio loop stays free."""

    async def run() -> list[Row]:
        return [await trio.to_thread.run_sync(functools.partial(function, *args))]

    return run


def _one(function: Callable[..., Awaitable[Row]], *args: Any) -> RowRunner:
    async def run() -> list[Row]:
        return [await function(*args)]

    return run


async def _run_rows(runners: dict[str, RowRunner], wanted: set[str]) -> dict[str, list[Row]]:
    """Each wanted row in turn; a row that raises becomes a failed row and the others still run."""
    results = {}
    for name, runner in runners.items():
        if name in wanted:
            started = time.monotonic()
            try:
                results[name] = await runner()
            except Exception as exc:
                results[name] = [_failed(name, exc)]
            for row in results[name]:
                row.details.setdefault("seconds", time.monotonic() - started)
    return results


def _failed(name: str, error: BaseException) -> Row:
    traceback.print_exception(error, file=sys.stderr)
    title, unit = TITLES[name]
    return not_measured(name, title, unit, f"failed: {type(error).__name__}: {error}")


async def run_suite(options: Options) -> list[Row]:
    rows: dict[str, list[Row]] = {}
    for phase, names in (QUICK_PHASES if options.sizes == QUICK else PHASES).items():
        wanted = set(names) & set(options.only)
        if not wanted:
            continue
        print(f"bench: {phase} ({', '.join(sorted(wanted))})", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            rows.update(await PHASE_RUNNERS[phase](options, wanted))
        except Exception as exc:  # the phase's processes did not come up: every row of it failed
            rows.update({name: [_failed(name, exc)] for name in wanted})
        PHASE_SECONDS[phase] = round(time.monotonic() - started, 1)
    return [row for name in ROW_NAMES if name in rows for row in rows[name]]


def parse_only(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ROW_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown rows {unknown or text!r}: choose from {', '.join(ROW_NAMES)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny samples, one network for all (a smoke test)"
    )
    parser.add_argument("--only", type=parse_only, default=ROW_NAMES, help="comma-separated rows to run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (default: %(default)s)")
    parser.add_argument("--model", help="gpu row: a GGUF file, or 'tiny' for the tiny test model on the CPU")
    parser.add_argument("--n-gpu-layers", type=int, default=-1, help="gpu row: layers on the GPU (-1: all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--response-shaping", choices=("on", "off"), default="on", help="the bench nodes' --response-shaping"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    options = Options(sizes, args.only, args.model, args.n_gpu_layers, args.response_shaping)
    metadata = run_metadata(ROOT, " ".join(["python -m benchmarks.suite", *argv]))
    started = time.monotonic()
    rows = [row.to_json() for row in trio.run(run_suite, options)]
    metadata["seconds"] = round(time.monotonic() - started, 1)
    metadata["load_average_end"] = list(os.getloadavg())
    metadata["errors"] = RUN_ERRORS
    metadata["phase_seconds"] = PHASE_SECONDS
    args.out.write_text(json.dumps({"run": metadata, "results": rows}, indent=2) + "\n")
    print(markdown_table(rows) if args.markdown else text_table(rows))
    print(f"\n{metadata['command']}: {metadata['date']}, {metadata['seconds']} s, written to {args.out}")
    for error in RUN_ERRORS:
        print(f"error: {error}", file=sys.stderr)
    failed = any(row.get("reason", "").startswith("failed") for row in rows)
    return 1 if failed or RUN_ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
