"""An opt-in latency tracer: when a message crossed which connection, and when a request passed named points.

Off unless the environment names a directory in TP_TRACE_DIR when the process starts (`ENABLED` is decided
once, at import: the hot paths test one module-level constant and do nothing else). When on, every WebSocket
message received and sent (tp_net.trio.transport_ws) and every named point (`mark`) is kept in a bounded
in-memory ring as (CLOCK_MONOTONIC ns, kind, local port, peer port, sequence number, bytes): never any
content. CLOCK_MONOTONIC is one clock for all processes of a machine, and a connection on 127.0.0.1 is
named by its two ports, so benchmarks/latency_trace.py lines up the records of all the network's processes:
the k-th message one side sent on a connection is the k-th the other side received.

`dump()` writes the ring to TP_TRACE_DIR/trace-PID.json (the benchmark asks for it with a signal).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Final

TRACE_DIR_ENV: Final = "TP_TRACE_DIR"
# Records kept per process, the oldest dropped first (a record is a small tuple: ~20 MB at the most).
TRACE_RECORDS_MAX: Final = 200_000

_DIRECTORY: Final = os.environ.get(TRACE_DIR_ENV, "")
ENABLED: Final = bool(_DIRECTORY)

# (monotonic ns, kind, local port, peer port, sequence, bytes); kind "recv", "send", "send0" (a send's
# start) or a mark's name (ports, sequence and bytes 0).
Record = tuple[int, str, int, int, int, int]
_records: deque[Record] = deque(maxlen=TRACE_RECORDS_MAX)


def message(kind: str, ports: tuple[int, int], sequence: int, size: int, at_ns: int | None = None) -> None:
    """A message `kind` ("recv", "send" or "send0") of `size` bytes, the `sequence`-th that way on the
    connection `ports` (local, peer), at `at_ns` (now if None)."""
    at = time.monotonic_ns() if at_ns is None else at_ns
    _records.append((at, kind, ports[0], ports[1], sequence, size))


def mark(name: str) -> None:
    """A named point on a request's path (a constant name, never anything taken from the request)."""
    if ENABLED:
        _records.append((time.monotonic_ns(), name, 0, 0, 0, 0))


def records() -> list[Record]:
    return list(_records)


def clear() -> None:
    _records.clear()


def dump(directory: str | None = None) -> Path:
    """Write the ring to DIRECTORY/trace-PID.json (TP_TRACE_DIR's unless given) and return the path."""
    path = Path(directory or _DIRECTORY) / f"trace-{os.getpid()}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "records": list(_records)}))
    return path
