"""Traces from real processes (`python -m benchmarks.traffic --real`; docs/BENCHMARKS.md, "Traffic analysis").

tp_dev's local network of processes on 127.0.0.1 (three tp-relay processes, the authorities among them, and a
tp-node whose fake engine plays the synthetic WORKLOAD: benchmarks/traffic/planned_node.py) carries the
conversations; this process is the client, with the same ClientLink and request padding as the gateway,
and records (time, direction, bytes) of every WebSocket message on its link to the guard (the link's own
counters: what a recording proxy between it and the guard would see, less the TCP and WebSocket framing).
Wall-clock time, so a run takes minutes; conversations run `PARALLEL_CONVERSATIONS` at a time, each on a link
of its own to the guard, so each guard trace holds one conversation. Only the guard position is recorded.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import replace
from pathlib import Path

import trio

from benchmarks.traffic.capture import WORKLOAD, Conversation, Setting, converse, request_document
from benchmarks.traffic.planned_node import plan_for
from tp_dev.local_network import local_network
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_DEFAULT, RESPONSE_SHAPING_OFF, ResponseShaping
from tp_net.trio.transport_ws import WebSocketDialer

PARALLEL_CONVERSATIONS = 6  # at once, each on its own link: about 13-17 s each with the defaults
CONVERSATION_TIMEOUT_S = 120.0


# The tp-node flags for each shaping they can express (the others: the in-process harness only).
REAL_SHAPINGS: dict[ResponseShaping, list[str]] = {
    RESPONSE_SHAPING_OFF: ["--response-shaping", "off"],
    RESPONSE_SHAPING_DEFAULT: [],
    replace(RESPONSE_SHAPING_DEFAULT, first_at_once=True): ["--first-token", "at-once"],
}


async def capture_real_async(
    setting: Setting, per_class: int, seed: int, data_dir: Path
) -> list[Conversation]:
    flags = REAL_SHAPINGS[setting.shaping]
    rng = random.Random(seed)
    classes = len(WORKLOAD)
    # The request seed names the class (plan_for): seed % classes.
    numbers = [number * classes + label for number in range(1, per_class + 1) for label in range(classes)]
    rng.shuffle(numbers)
    found: dict[int, Conversation] = {}
    async with (
        local_network(
            data_dir, node_args=flags, node_module="benchmarks.traffic.planned_node", log_level="warning"
        ) as network,
        trio.open_nursery() as nursery,
    ):
        hops = network.path()
        dialer = WebSocketDialer(nursery)
        limiter = trio.CapacityLimiter(PARALLEL_CONVERSATIONS)

        async def one(number: int) -> None:
            label, plan = plan_for(number)
            document = request_document(plan, number, pad=setting.pad_requests)
            async with limiter:
                with trio.fail_after(CONVERSATION_TIMEOUT_S):
                    found[number], _, _ = await converse(dialer, hops, document, label, random.Random(number))

        for number in numbers:
            nursery.start_soon(one, number)
    return [found[number] for number in numbers]


def capture_real(setting: Setting, *, per_class: int, seed: int) -> list[Conversation]:
    """`per_class` conversations of each WORKLOAD class under `setting`, on real processes (wall time)."""
    with tempfile.TemporaryDirectory(prefix="traffic-real-") as data_dir:
        return trio.run(capture_real_async, setting, per_class, seed, Path(data_dir))
