from __future__ import annotations

import logging

from simulations.adversary import Coalition
from simulations.invariants import InvariantChecker, SentinelLogHandler, sentinel
from tp_net.protocol.descriptors import RelayDescriptor


def _relay(node_id: bytes, family: str) -> RelayDescriptor:
    return RelayDescriptor(node_id, "ws://10.0.0.1:7000/", (bytes(32),), 100, family, "v", 0, 10)


def _stopped_checker() -> tuple[InvariantChecker, list[bool]]:
    checker = InvariantChecker(seed=77)
    stopped: list[bool] = []
    checker.arm(lambda: stopped.append(True))
    return checker, stopped


def test_a_log_record_with_a_prompt_sentinel_is_a_violation() -> None:
    checker, stopped = _stopped_checker()
    logger = logging.getLogger("tests.simulations.leaky")
    handler = SentinelLogHandler(checker)
    logger.addHandler(handler)
    try:
        logger.warning("carried %s", "nothing secret")
        assert checker.violation is None
        logger.warning("carried %s", sentinel(77, 3))
    finally:
        logger.removeHandler(handler)
    assert checker.violation is not None
    assert checker.violation.seed == 77
    assert "tests.simulations.leaky" in checker.violation.event
    assert stopped == [True]


def test_two_hops_of_one_family_are_a_violation_and_only_the_first_counts() -> None:
    checker, stopped = _stopped_checker()
    checker.check_path(1, [_relay(b"a" * 32, "x"), _relay(b"b" * 32, ""), _relay(b"c" * 32, "y")])
    assert checker.violation is None
    checker.check_path(2, [_relay(b"a" * 32, "x"), _relay(b"b" * 32, "x"), _relay(b"c" * 32, "y")])
    checker.check_path(3, [_relay(b"a" * 32, ""), _relay(b"a" * 32, ""), _relay(b"c" * 32, "")])
    assert checker.violation is not None
    assert "request 2" in checker.violation.event
    assert "'x'" in checker.violation.event
    assert stopped == [True]


def test_plaintext_on_a_relay_link_is_a_violation_but_not_at_a_node() -> None:
    checker, _ = _stopped_checker()
    checker.scan_received("node-1", "node", sentinel(77, 1).encode())
    assert checker.violation is None
    checker.scan_received("relay-4", "relay", b"xx" + sentinel(77, 1).encode())
    assert checker.violation is not None
    assert "relay-4" in checker.violation.event


def test_plaintext_in_a_cell_a_relay_decrypted_is_a_violation() -> None:
    checker, stopped = _stopped_checker()
    checker.scan_decrypted("relay-2", bytes(509))
    assert checker.violation is None
    checker.scan_decrypted("relay-2", b"\x00" * 40 + sentinel(77, 5).encode())
    assert checker.violation is not None
    assert "relay-2 decrypted plaintext" in checker.violation.event
    assert checker.decrypted_cells == 2
    assert stopped == [True]


def test_the_coalition_links_a_guard_sighting_to_the_next_last_hop_sighting() -> None:
    coalition = Coalition(frozenset({b"n" * 32}))
    coalition.guard_sightings += [(10.0, "relay-1", "client-1"), (20.0, "relay-1", "client-2")]
    coalition.exit_sightings += [(11.0, "relay-2", b"n" * 32), (40.0, "relay-2", b"n" * 32)]
    assert coalition.linked_pairs() == {"relay-1": {("client-1", b"n" * 32)}}
