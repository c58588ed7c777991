"""The node's "sealed" service over a real in-memory network: a sealed request goes over an ordinary circuit,
the node opens it and seals every answer; what the circuit's client (a gateway) sees is ciphertext, and it
cannot replay a request or send it to another node."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from tp_net.protocol.sealed import (
    SEALED_SERVICE,
    ResponseOpener,
    SealedRequest,
    seal_request,
    sealing_key_pair,
)
from tp_net.trio.client import ClientLink
from tp_node.engine import FakeEngine
from tp_node.gpu_node import INFERENCE_SERVICE
from tp_node.testing.memory_network import in_process_network

KEY = sealing_key_pair(b"the in-process node's sealing key")
SENTINEL = "sealed-sentinel-8c41"
REQUEST = {"messages": [{"role": "user", "content": SENTINEL}], "max_tokens": 4, "seed": 3}


async def _ask(net: Any, service: str, document: Any) -> list[Any]:
    hops = net.path()
    async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
        circuit = await link.build_circuit(hops)
        with trio.fail_after(30):
            return [chunk async for chunk in circuit.request(service, document)]


def _sealed(net: Any, document: Any = REQUEST, node_id: bytes | None = None) -> SealedRequest:
    return seal_request(node_id or net.node_hop.node_id, KEY.public, document, time.time())


def _open(request: SealedRequest, messages: list[Any]) -> list[Any]:
    opener = ResponseOpener(request)
    opened = [opener.open(message["sealed"]) for message in messages]
    opener.finish()
    assert opened[-1] is None
    return opened[:-1]


async def test_a_sealed_request_gets_the_same_answer_as_a_plain_one() -> None:
    async with in_process_network(engine=FakeEngine(), sealing_keys=[KEY]) as net:
        plain = await _ask(net, INFERENCE_SERVICE, REQUEST)
        request = _sealed(net)
        answer = await _ask(net, SEALED_SERVICE, {"sealed": request.data})
    assert _open(request, answer) == plain
    assert all(set(message) == {"sealed"} for message in answer)
    assert SENTINEL.encode() not in request.data


async def test_an_engine_refusal_is_sealed_too() -> None:
    async with in_process_network(engine=FakeEngine(), sealing_keys=[KEY]) as net:
        request = _sealed(net, {"model": "no-such-model", "messages": REQUEST["messages"]})
        answer = await _ask(net, SEALED_SERVICE, {"sealed": request.data})
    assert all(set(message) == {"sealed"} for message in answer)
    assert _open(request, answer)[0]["error"]["code"] == "model_not_found"


async def test_a_replayed_sealed_request_is_refused_by_the_node() -> None:
    async with in_process_network(engine=FakeEngine(), sealing_keys=[KEY]) as net:
        request = _sealed(net)
        await _ask(net, SEALED_SERVICE, {"sealed": request.data})
        again = await _ask(net, SEALED_SERVICE, {"sealed": request.data})
    assert again == [{"error": {"code": "sealed_replayed", "message": "the sealed request was seen before"}}]


async def test_a_request_sealed_for_another_node_is_refused() -> None:
    async with in_process_network(engine=FakeEngine(), sealing_keys=[KEY]) as net:
        request = _sealed(net, node_id=bytes(32))
        answer = await _ask(net, SEALED_SERVICE, {"sealed": request.data})
    assert answer[0]["error"]["code"] == "sealed_wrong_node"


@pytest.mark.parametrize("document", [{"sealed": "text"}, {"sealed": b"x", "model": "m"}, {}])
async def test_a_malformed_sealed_message_is_refused(document: Any) -> None:
    async with in_process_network(engine=FakeEngine(), sealing_keys=[KEY]) as net:
        answer = await _ask(net, SEALED_SERVICE, document)
    assert answer[0]["error"]["code"] == "invalid_request"


async def test_a_node_without_sealing_keys_has_no_sealed_service() -> None:
    async with in_process_network(engine=FakeEngine()) as net:
        assert net.node.sealed is None


async def test_a_restarted_node_refuses_a_request_sealed_before_it_started() -> None:
    async with in_process_network(engine=FakeEngine(), sealing_keys=[KEY]) as net:
        request = seal_request(net.node_hop.node_id, KEY.public, REQUEST, time.time() - 5)
        answer = await _ask(net, SEALED_SERVICE, {"sealed": request.data})
    assert answer[0]["error"]["code"] == "sealed_stale"
