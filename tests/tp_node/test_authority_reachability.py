"""An authority that cannot reach the others warns once per peer, and says whether the threshold holds."""

from __future__ import annotations

import logging

import pytest

from tests.tp_net.directory_factories import NETWORK, PERIOD_S, network_of
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.authority_core import Admission, AuthorityCore
from tp_node.directory_duties import AuthorityRunner

AUTHORITIES, TRUST = network_of(3, 2)


async def test_unreachable_authorities_warn_once_each_and_say_whether_the_threshold_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries = tuple(
        BootstrapAuthority(a.node_id, f"ws://127.0.0.1:{7001 + i}/") for i, a in enumerate(AUTHORITIES)
    )
    bootstrap = Bootstrap(NETWORK, 2, PERIOD_S, entries, True)
    core = AuthorityCore(AUTHORITIES[0], TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    runner = AuthorityRunner(core, bootstrap, MemoryNetwork().dialer())  # nobody listens
    second, third = runner.peers
    with caplog.at_level(logging.WARNING, logger="tp_node.directory_duties"):
        await runner._send(second, {"op": "vote", "vote": b""})
        await runner._send(second, {"op": "vote", "vote": b""})  # still down: no second warning
        await runner._send(third, {"op": "vote", "vote": b""})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert second.node_id.hex() in warnings[0] and "ws://127.0.0.1:7002/" in warnings[0]
    assert "2 of 3 authorities reachable, threshold 2: the threshold still holds" in warnings[0]
    assert "1 of 3 authorities reachable, threshold 2: below the threshold" in warnings[1]
