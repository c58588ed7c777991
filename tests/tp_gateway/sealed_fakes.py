"""A fake overlay for the sealed routes: a directory really signed by test authorities, listing one node with
a sealing key, and a `forward_sealed` that opens the request as that node would (tp_net.protocol.sealed, with
a replay cache) and seals a scripted answer. Fakes, not mocks: every byte the client sees is real crypto.
`tamper` lets a test play the hostile gateway on the answer's chunks."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import trio

from tests.tp_gateway.overlay_fakes import FakeStats
from tests.tp_net.directory_factories import (
    NETWORK,
    NODE_SEED_BASE,
    PERIOD_S,
    document,
    identity,
    model_offer,
    network_of,
    node_descriptor,
    signed_document,
)
from tp_gateway.isolation import Isolation
from tp_gateway.overlay import OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import sign_descriptor
from tp_net.protocol.directory import SignedDocument
from tp_net.protocol.sealed import ReplayCache, SealedError, open_request, sealing_key_pair

MODEL = "tiny-sealed"
WORDS = ["Sealed", " hello", " world"]
Tamper = Callable[[list[bytes]], list[bytes]]


def final() -> dict[str, Any]:
    return {"finish_reason": "stop", "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}}


class SealingOverlay:
    def __init__(
        self,
        *,
        tamper: Tamper | None = None,
        signers: int = 2,
        error: dict[str, str] | None = None,
        script: list[dict[str, Any]] | None = None,
    ) -> None:
        self.authorities, self.trust = network_of(3, 2)
        self.bootstrap = Bootstrap(
            NETWORK,
            2,
            PERIOD_S,
            tuple(
                BootstrapAuthority(a.node_id, f"ws://127.0.0.1:{9001 + i}/")
                for i, a in enumerate(self.authorities)
            ),
        )
        node = identity(NODE_SEED_BASE + 1)
        self.node_id = node.node_id
        self.key = sealing_key_pair(b"the fake node's sealing key input")
        period = int(time.time()) // PERIOD_S * PERIOD_S
        descriptor = dataclasses.replace(
            node_descriptor(node, published=period - 60, models=(model_offer(MODEL),)),
            sealing_keys=(self.key.public,),
        )
        body = document([sign_descriptor(node, descriptor)], period=period).encode()
        self.signed_document: SignedDocument | None = signed_document(body, self.authorities[:signers])
        self.replay = ReplayCache()
        self.tamper = tamper
        self.error = error  # the node's answer: this error instead of words
        self.script = script  # or these response messages (6.2), each sealed
        self.answered: list[bytes] = []  # every chunk the gateway got back
        self.forwarded: list[bytes] = []  # every byte the gateway handed to the overlay
        self.documents: list[Any] = []  # what the node opened
        self.ready = trio.Event()
        self.ready.set()
        self.pooled_circuits = 1
        self.stats = FakeStats()

    def model_ids(self) -> list[str]:
        return [MODEL]

    def model_identity(self, model_id: str) -> None:
        return None  # no file identity in this fake directory

    def model_created(self, model_id: str) -> int:
        return 1_700_000_000

    async def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        raise OverlayError("model_not_found", "this fake carries sealed requests only")
        yield {}

    async def forward_sealed(self, node_id: bytes, sealed: bytes) -> AsyncGenerator[bytes, None]:
        self.forwarded.append(sealed)
        if node_id != self.node_id:
            raise OverlayError("node_not_found", "the directory lists no such node")
        try:
            opened = open_request(sealed, node_id, [self.key], self.replay, time.time())
        except SealedError as exc:
            raise OverlayError(f"sealed_{exc.code}", str(exc)) from None
        self.documents.append(opened.document)
        if self.script is not None:
            answer = [opened.sealer.seal(message) for message in self.script]
        elif self.error is not None:
            answer = [opened.sealer.seal({"error": self.error})]
        else:
            answer = [opened.sealer.seal({"text": word}) for word in WORDS] + [opened.sealer.seal(final())]
        answer.append(opened.sealer.seal_final())
        for chunk in self.tamper(answer) if self.tamper else answer:
            await trio.lowlevel.checkpoint()
            self.answered.append(chunk)
            yield chunk
