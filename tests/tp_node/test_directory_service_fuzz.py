"""Fuzzing the "directory" service of relays and authorities (tp_node.directory_service): whatever an
anonymous client sends as a request, the answer is a reply or a ServiceError, never another exception."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tp_net.directory_factories import PERIOD_S, T0, network_of, signed_relay, signed_vote
from tp_net.protocol.errors import ServiceError
from tp_node.authority_core import Admission, AuthorityCore
from tp_node.directory_service import DirectoryService

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AUTHORITIES, TRUST = network_of(3, 2)
RELAY = signed_relay(1)
SAMPLE_BYTES = [RELAY.body, RELAY.signature, signed_vote(AUTHORITIES[1], [RELAY]), AUTHORITIES[0].node_id]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.text(max_size=10)
    | st.binary(max_size=64)
    | st.sampled_from(SAMPLE_BYTES)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
KEYS = [
    "op",
    "descriptor",
    "signature",
    "invitation",
    "forwarded",
    "vote",
    "relayed",
    "period",
    "body",
    "authority",
]
requests = st.fixed_dictionaries(
    {"op": st.sampled_from(["get", "publish", "vote", "signature", "other"]) | values},
    optional={key: values for key in KEYS[1:]},
)


def service() -> DirectoryService:
    core = AuthorityCore(AUTHORITIES[0], TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    return DirectoryService(
        TRUST,
        authority=core,
        forward=lambda *_: None,
        relay_vote=lambda *_: None,
        wall_clock=lambda: T0 + 60,
    )


async def answer(directory: DirectoryService, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [reply async for reply in directory.handle(request)]


@FUZZ
@given(requests)
def test_any_request_gets_an_answer_or_a_service_error(request: dict[str, Any]) -> None:
    try:
        replies = trio.run(answer, service(), request)
    except ServiceError:
        return
    assert replies and all(isinstance(reply, dict) for reply in replies)


def test_a_valid_publish_is_accepted() -> None:
    request = {"op": "publish", "descriptor": RELAY.body, "signature": RELAY.signature}
    assert trio.run(answer, service(), request) == [{"ok": True}]


def test_a_malformed_vote_is_refused_not_a_crash() -> None:
    """Found by the fuzzer: malformed bytes raised RemoteProtocolError out of the handler, which ended the
    authority's process (one anonymous request took an authority down)."""
    for op, field in (("vote", "vote"), ("publish", "descriptor"), ("signature", "body")):
        request = {"op": op, field: b"", "descriptor": b"", "signature": b"", "period": 0, "authority": b""}
        try:
            trio.run(answer, service(), request)
        except ServiceError as exc:
            assert exc.code == "refused"


def test_a_forged_forward_is_refused_and_a_proven_one_is_not_forwarded_again() -> None:
    forwarded: list[bytes] = []
    core = AuthorityCore(AUTHORITIES[0], TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    directory = DirectoryService(
        TRUST,
        authority=core,
        forward=lambda signed, _: forwarded.append(signed.body),
        wall_clock=lambda: T0 + 60,
    )
    publish = {"op": "publish", "descriptor": RELAY.body, "signature": RELAY.signature}
    for forged in (True, 1, {"authority": AUTHORITIES[1].node_id, "signature": b"x" * 64}):
        with pytest.raises(ServiceError) as refused:
            trio.run(answer, directory, {**publish, "forwarded": forged})
        assert refused.value.code == "refused" and "other authorities only" in str(refused.value)
    assert core.accepted_count == 0 and forwarded == []

    proof = AuthorityCore(AUTHORITIES[1], TRUST, period_s=PERIOD_S, admission=Admission.OPEN).forward_proof(
        RELAY
    )
    assert trio.run(answer, directory, {**publish, "forwarded": proof}) == [{"ok": True}]
    assert core.accepted_count == 1 and forwarded == []

    other = signed_relay(2)
    plain = {"op": "publish", "descriptor": other.body, "signature": other.signature, "forwarded": False}
    assert trio.run(answer, directory, plain) == [{"ok": True}]
    assert forwarded == [other.body], "a publisher's own upload goes on to the other authorities"
