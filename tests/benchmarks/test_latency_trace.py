"""benchmarks/latency_trace.py follows one request's first token through synthetic trace records: across each
connection by its ports and sequence numbers, inside each hop to the forward (a larger message on another
connection wins over a small one sent first), and its segments add up to the request's time exactly; an A/B
run (--ab) reports each arm, and its signals switch the named attribute."""

from __future__ import annotations

import json
import signal
import sys
import types
from pathlib import Path

import pytest

from benchmarks.latency_trace import AB_ENV, SITECUSTOMIZE, analyse, anatomy, load
from tp_net.trio.message_trace import TRACE_DIR_ENV

GATEWAY, GUARD, MIDDLE, HOME, NODE = 1, 2, 3, 4, 5
ROLES = {GATEWAY: "gateway", GUARD: "relay 1", MIDDLE: "relay 2", HOME: "relay 3", NODE: "node"}


def _hop(at: int, received: tuple[int, int], sent: tuple[int, int], size: int) -> list[list[object]]:
    """A relay's records: a message received on `received` (local, peer), forwarded on `sent`."""
    return [
        [at, "recv", *received, 1, size],
        [at + 50, "pump_enqueue", 0, 0, 0, 0],
        [at + 100, "pump_writer_runs", 0, 0, 0, 0],
        [at + 150, "send0", *sent, 1, size],
        [at + 170, "send", *sent, 1, size],
    ]


def _records() -> dict[int, list[list[object]]]:
    request, answer = 6000, 2000
    gateway = [
        [100, "gw_http_in", 0, 0, 0, 0],
        [200, "gw_circuit", 0, 0, 0, 0],
        [250, "pump_enqueue", 0, 0, 0, 0],
        [300, "pump_writer_runs", 0, 0, 0, 0],
        [350, "send0", 1001, 2000, 1, request],
        [400, "send", 1001, 2000, 1, request],
        [2200, "recv", 1001, 2000, 1, answer],
        [2300, "gw_first_chunk", 0, 0, 0, 0],
        [2400, "gw_body_start", 0, 0, 0, 0],
        [2500, "gw_first_yield", 0, 0, 0, 0],
    ]
    # a small message the guard sends elsewhere first: not the forward
    guard = [[460, "send0", 2002, 9000, 1, 100], [461, "send", 2002, 9000, 1, 100]]
    guard += _hop(450, (2000, 1001), (2001, 3000), request) + _hop(2000, (2001, 3000), (2000, 1001), answer)
    middle = _hop(700, (3000, 2001), (3001, 4000), request) + _hop(1800, (3001, 4000), (3000, 2001), answer)
    home = _hop(900, (4000, 3001), (4000, 5001), request) + _hop(1600, (4000, 5001), (4000, 3001), answer)
    node = [
        [1100, "recv", 5001, 4000, 1, request],
        [1200, "svc_request", 0, 0, 0, 0],
        [1300, "svc_handler", 0, 0, 0, 0],
        [1400, "svc_message", 0, 0, 0, 0],
        [1450, "pump_enqueue", 0, 0, 0, 0],
        [1500, "pump_writer_runs", 0, 0, 0, 0],
        [1550, "send0", 5001, 4000, 1, answer],
        [1570, "send", 5001, 4000, 1, answer],
    ]
    return {GATEWAY: gateway, GUARD: guard, MIDDLE: middle, HOME: home, NODE: node}


def test_a_request_is_followed_through_every_hop_and_its_segments_add_up(tmp_path: Path) -> None:
    for pid, records in _records().items():
        (tmp_path / f"trace-{pid}.json").write_text(json.dumps({"pid": pid, "records": records}))
    processes, port_owner = load(tmp_path, ROLES)
    walk = anatomy(0, 2600, gateway=GATEWAY, node=NODE, processes=processes, port_owner=port_owner)
    assert walk is not None
    segments = dict(walk.segments)
    assert sum(segments.values()) == 2600  # client sent at 0, had the first content at 2600
    assert segments["gateway -> guard: write, kernel, wake-up, read"] == 450 - 350
    assert segments["guard forward: received -> queued (open, codec, hop, onion)"] == 50
    assert segments["guard -> middle: write, kernel, wake-up, read"] == 700 - 600  # not the 100-byte send
    assert segments["node: engine's first token"] == 100
    assert segments["guard -> gateway: write, kernel, wake-up, read"] == 2200 - 2150
    assert len(walk.segments) == 5 + 8 + 6 * 3 + 6 + 4  # gateway, crossings, relay hops, node, gateway
    assert [who for who, _ in walk.writes] == [
        "gateway",
        "guard",
        "middle",
        "home relay",
        "node",
        "home relay",
        "middle",
        "guard",
    ]


def test_a_missing_record_leaves_the_request_out(tmp_path: Path) -> None:
    records = _records()
    records[MIDDLE] = [record for record in records[MIDDLE] if record[1] != "recv"]
    for pid, kept in records.items():
        (tmp_path / f"trace-{pid}.json").write_text(json.dumps({"pid": pid, "records": kept}))
    processes, port_owner = load(tmp_path, ROLES)
    assert anatomy(0, 2600, gateway=GATEWAY, node=NODE, processes=processes, port_owner=port_owner) is None


def _write_run(tmp_path: Path, client: dict[str, object]) -> None:
    roles = {**ROLES, 6: "direct"}
    records = {**_records(), 6: [[100, "gw_http_in", 0, 0, 0, 0], [300, "gw_first_chunk", 0, 0, 0, 0]]}
    records[6] += [[400, "gw_body_start", 0, 0, 0, 0], [500, "gw_first_yield", 0, 0, 0, 0]]
    for pid, kept in records.items():
        (tmp_path / f"trace-{pid}.json").write_text(json.dumps({"pid": pid, "records": kept}))
    client = {"roles": {str(pid): role for pid, role in roles.items()}, "tokens": [16], **client}
    (tmp_path / "client.json").write_text(json.dumps(client))


def test_an_ab_run_reports_each_arm_with_the_networks_cpu(tmp_path: Path) -> None:
    _write_run(
        tmp_path,
        {
            "variants": [" on", " off"],
            "ab": "tp_net.trio.client:FLAG",
            "overlay on 16": [[0, 2600 / 1e6, 3.0]],
            "overlay off 16": [[0, 2600 / 1e6, 5.0]],
            "direct 16": [[0, 600 / 1e6, 0.0]],
        },
    )
    report = analyse(tmp_path)
    assert "## 16-token answers, tp_net.trio.client:FLAG on; the network's CPU per request" in report
    assert "(mean of 1): 3.00 ms" in report and "(mean of 1): 5.00 ms" in report
    assert report.count("followed end to end 1 (0 not") == 3  # both arms, the direct server once


def test_a_run_without_ab_still_analyses(tmp_path: Path) -> None:
    _write_run(tmp_path, {"overlay 16": [[0, 2600 / 1e6]], "direct 16": [[0, 600 / 1e6]]})
    report = analyse(tmp_path)
    assert "## 16-token answers\n" in report and "CPU per request" not in report


def test_the_ab_signals_switch_the_named_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("tp_ab_probe")
    module.FLAG = False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tp_ab_probe", module)
    monkeypatch.setenv(AB_ENV, "tp_ab_probe:FLAG")
    monkeypatch.delenv(TRACE_DIR_ENV, raising=False)
    saved = {number: signal.getsignal(number) for number in (signal.SIGRTMIN + 1, signal.SIGRTMIN + 2)}
    try:
        exec(SITECUSTOMIZE, {})
        signal.raise_signal(signal.SIGRTMIN + 1)
        assert module.FLAG is True
        signal.raise_signal(signal.SIGRTMIN + 2)
        assert module.FLAG is False
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
