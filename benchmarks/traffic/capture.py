"""Traces of conversations as a passive observer records them (docs/BENCHMARKS.md, "Traffic analysis").

The real relay, node and client code runs in one process on the memory transport under trio's MockClock
(virtual time: a run of hundreds of conversations takes seconds). Observers record (time, direction, bytes)
of every message on two links: the client's link to its guard, and the middle relay's link towards the exit.
Conversations run one after the other, each on a link of its own to the guard; the middle relay's link is
shared, so its trace for a conversation is what passed from the request until the link went quiet.

The workload is synthetic: topic classes that differ in prompt length, response length and token timing
(WORKLOAD), served by a fake engine that follows a per-conversation plan. Nothing here is a real model's
timing: the point is a classifier that can win when nothing is shaped.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from tp_crypto.identity import Identity
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.traffic_shaping import ResponseShaping, pad_request
from tp_net.trio.client import ClientLink
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.inference import final_chunk, parse_request
from tp_node.relay import Relay
from tp_node.testing.memory_network import honest_relay, in_process_network

# (seconds since the conversation started, +1 towards the node or -1 back, bytes)
Record = tuple[float, int, int]
QUIET_S = 2.0  # a shared link's trace for a conversation ends once nothing passed for this long


@dataclass(frozen=True)
class TopicClass:
    """A synthetic topic: uniform ranges per conversation; token gaps jitter +-30% around the drawn mean,
    and every `pause_every` tokens (0: never) the engine pauses `pause_s`."""

    name: str
    prompt_chars: tuple[int, int]
    response_tokens: tuple[int, int]
    token_gap_s: tuple[float, float]
    pause_every: int = 0
    pause_s: float = 0.0
    prefill_s_per_kchar: float = 0.05


WORKLOAD = (
    TopicClass("trivia", (100, 600), (60, 220), (0.020, 0.030)),
    TopicClass("code", (600, 1800), (80, 260), (0.030, 0.040)),
    TopicClass("advice", (200, 1000), (50, 240), (0.025, 0.035), pause_every=20, pause_s=0.3),
)


@dataclass(frozen=True)
class Plan:
    prompt_chars: int
    prefill_s: float
    gaps_s: tuple[float, ...]


def draw_plan(topic: TopicClass, rng: random.Random) -> Plan:
    chars = rng.randint(*topic.prompt_chars)
    tokens = rng.randint(*topic.response_tokens)
    mean = rng.uniform(*topic.token_gap_s)
    gaps = []
    for index in range(tokens):
        gap = mean * rng.uniform(0.7, 1.3)
        if topic.pause_every and index % topic.pause_every == topic.pause_every - 1:
            gap += topic.pause_s
        gaps.append(gap)
    return Plan(chars, topic.prefill_s_per_kchar * chars / 1000, tuple(gaps))


def request_document(plan: Plan, seed: int, *, pad: bool) -> dict[str, Any]:
    """The request the client sends for `plan` (the engine finds the plan by `seed`)."""
    document: dict[str, Any] = {
        "messages": [{"role": "user", "content": "w" * plan.prompt_chars}],
        "max_tokens": len(plan.gaps_s),
        "seed": seed,
    }
    return pad_request(document) if pad else document


async def play(plan: Plan) -> AsyncGenerator[dict[str, Any], None]:
    """The engine's side of `plan`: prefill, then one word per gap, then the final chunk."""
    await trio.sleep(plan.prefill_s)
    for gap in plan.gaps_s:
        await trio.sleep(gap)
        yield {"text": "word "}
    yield final_chunk("length", plan.prompt_chars // 4, len(plan.gaps_s))


class PlannedEngine:
    """Serves each request by the plan registered under its `seed`: prefill, then one word per gap."""

    def __init__(self) -> None:
        self.plans: dict[int, Plan] = {}

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        parsed = parse_request(request)
        async for chunk in play(self.plans.pop(parsed.seed or 0)):
            yield chunk


class RecordingChannel:
    def __init__(self, channel: Channel, records: list[tuple[float, int, int]]) -> None:
        self._channel = channel
        self._records = records

    async def send_message(self, message: bytes) -> None:
        self._records.append((trio.current_time(), 1, len(message)))
        await self._channel.send_message(message)

    async def receive_message(self) -> bytes:
        message = await self._channel.receive_message()
        self._records.append((trio.current_time(), -1, len(message)))
        return message

    async def aclose(self) -> None:
        await self._channel.aclose()


class RecordingDialer:
    def __init__(self, dialer: Dialer, records: list[tuple[float, int, int]]) -> None:
        self._dialer = dialer
        self._records = records

    async def dial(self, address: str) -> Channel:
        return RecordingChannel(await self._dialer.dial(address), self._records)


@dataclass
class Conversation:
    label: int
    guard: list[Record] = field(default_factory=list)
    middle: list[Record] = field(default_factory=list)
    ttft_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class Setting:
    name: str
    shaping: ResponseShaping
    pad_requests: bool


def _window(records: list[tuple[float, int, int]], start: float, end: float) -> list[Record]:
    return [(t - start, d, n) for t, d, n in records if start <= t <= end]


async def converse(
    dialer: Dialer, hops: list[HopInfo], document: dict[str, Any], label: int, rng: random.Random
) -> tuple[Conversation, float, float]:
    """One conversation on a link of its own to the guard (`hops[0]`): its guard trace, time to first token
    and total time, and when (trio's clock) its request left and its trace ended."""
    conversation = Conversation(label)
    guard_records: list[tuple[float, int, int]] = []
    async with ClientLink.connect(RecordingDialer(dialer, guard_records), hops[0], rng=rng) as link:
        circuit = await link.build_circuit(hops)
        started = trio.current_time()
        first = None
        async for chunk in circuit.request(INFERENCE_SERVICE, document):
            if first is None and "text" in chunk:
                first = trio.current_time()
        conversation.ttft_s = (first or trio.current_time()) - started
        conversation.total_s = trio.current_time() - started
        # Until the node's padding (if any) stopped, checked on a beat counted from the request: when
        # the client closes its link must not depend on when its response really ended (a gateway
        # keeps its links; the close, and the keepalives before it, would leak that end).
        beat = started + math.ceil((trio.current_time() - started) / QUIET_S) * QUIET_S
        await trio.sleep_until(beat)
        while True:
            seen = len(guard_records)
            beat += QUIET_S
            await trio.sleep_until(beat)
            if len(guard_records) == seen:
                break
    stop = trio.current_time()
    conversation.guard = _window(guard_records, guard_records[0][0], stop)
    return conversation, started, stop


async def _capture(setting: Setting, per_class: int, seed: int) -> list[Conversation]:
    engine = PlannedEngine()
    middle_records: list[tuple[float, int, int]] = []

    def make_relay(
        index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        if index != 1:
            return honest_relay(index, identity, keys, net, rng)
        return Relay(identity, keys, dialer=RecordingDialer(net.dialer(), middle_records), rng=rng)

    rng = random.Random(seed)
    order = [label for label in range(len(WORKLOAD)) for _ in range(per_class)]
    rng.shuffle(order)
    conversations = []
    async with in_process_network(make_relay=make_relay, engine=engine, shaping=setting.shaping) as net:
        hops = net.path()
        for number, label in enumerate(order, start=1):
            plan = draw_plan(WORKLOAD[label], rng)
            engine.plans[number] = plan
            document = request_document(plan, number, pad=setting.pad_requests)
            conversation, started, stop = await converse(
                net.network.dialer(), hops, document, label, random.Random(number)
            )
            conversation.middle = _window(middle_records, started, stop)
            conversations.append(conversation)
    return conversations


def capture(setting: Setting, *, per_class: int, seed: int) -> list[Conversation]:
    """`per_class` conversations of each WORKLOAD class under `setting`, in virtual time."""
    return trio.run(_capture, setting, per_class, seed, clock=trio.testing.MockClock(autojump_threshold=0))
