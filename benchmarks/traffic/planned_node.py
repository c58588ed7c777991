"""`python -m benchmarks.traffic.planned_node` (real-process captures, benchmarks/traffic/real.py): tp-node
with a fake engine that plays the synthetic WORKLOAD; the request's `seed` names its class and plan
(`plan_for`), so the client and this process draw the same plan without talking. Nothing else differs from
tp-node."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from benchmarks.traffic.capture import WORKLOAD, Plan, draw_plan, play
from tp_cli.common import resolve_settings, run_role
from tp_node.engine import FakeEngine, ServingEngine
from tp_node.inference import parse_request
from tp_node.node_cli import build_parser, run_node


def plan_for(seed: int) -> tuple[int, Plan]:
    """The class (`seed` modulo the classes) and plan of the conversation with this request seed."""
    label = seed % len(WORKLOAD)
    return label, draw_plan(WORKLOAD[label], random.Random(seed))


class SeededPlanEngine(FakeEngine):
    """FakeEngine's model, answering each request by `plan_for(its seed)`."""

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        _, plan = plan_for(parse_request(request).seed or 0)
        async for chunk in play(plan):
            yield chunk


@asynccontextmanager
async def open_planned_engine(args: argparse.Namespace) -> AsyncIterator[ServingEngine]:
    yield SeededPlanEngine()


def main() -> int:
    args = resolve_settings(build_parser(), "node", sys.argv[1:])
    return run_role(lambda args, nursery: run_node(args, nursery, open_planned_engine), args)


if __name__ == "__main__":
    sys.exit(main())
