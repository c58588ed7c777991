"""A local network of processes with a tp-gateway in front of it: for one test, or shared by a module.

`running_gateway` starts the relays (the first three the authorities), one tp-node and the gateway, and
yields once the gateway lists the node's model. pytest-trio fixtures live as long as one test and a network
takes seconds to come up, so `BackgroundGateway` runs the same in its own `trio.run` on a background thread,
for a module-scoped fixture; its tests talk to it over HTTP only. Every process is stopped by its PID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from tp_dev.local_network import LocalNetwork, local_network
from tp_dev.processes import StartedProcess, python_process

MODELS_TIMEOUT_S = 60.0


@dataclass
class RunningGateway:
    network: LocalNetwork
    gateway: StartedProcess
    base_url: str  # http://127.0.0.1:PORT/v1
    model_ids: list[str]

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def node(self) -> StartedProcess:
        return self.network.node


@asynccontextmanager
async def running_gateway(
    data_dir: Path,
    *,
    node_args: Sequence[str] = (),
    gateway_args: Sequence[str] = (),
    api_key: str | None = None,
    relay_count: int = 3,
    log_level: str = "warning",
) -> AsyncIterator[RunningGateway]:
    """A local network and a gateway (with `--api-key api_key` when given) that lists a model."""
    async with local_network(
        data_dir, relay_count=relay_count, node_args=node_args, log_level=log_level
    ) as network:
        args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--bootstrap", str(network.bootstrap_file)]
        args += ["--data-dir", str(data_dir / "gateway"), "--log-level", log_level, *gateway_args]
        if api_key is not None:
            args += ["--api-key", api_key]
        async with python_process(args) as gateway:
            base_url = gateway.announcement["base_url"]
            model_ids = await trio.to_thread.run_sync(_wait_for_models, base_url, api_key)
            yield RunningGateway(network, gateway, base_url, model_ids)


def _wait_for_models(base_url: str, api_key: str | None) -> list[str]:
    """The model ids the gateway lists, once the signed directory names the node and the gateway has a warm
    circuit to it (the first document of a starting network may lack a relay the path needs)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    deadline = time.monotonic() + MODELS_TIMEOUT_S
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        while time.monotonic() < deadline:
            models = client.get(f"{base_url}/models").raise_for_status().json()["data"]
            warm = client.get(f"{base_url}/health").json().get("pooled_circuits", 0)
            if models and warm:
                return [str(model["id"]) for model in models]
            time.sleep(0.2)
    raise TimeoutError(f"the gateway had no model with a warm circuit within {MODELS_TIMEOUT_S} s")


class BackgroundGateway:
    """A gateway network (e.g. `partial(running_gateway, ...)`) run in a background thread: `start()`
    returns it running, `close()` stops it."""

    def __init__(self, start: Callable[[], AbstractAsyncContextManager[RunningGateway]]) -> None:
        self._start = start
        self._up = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._running: RunningGateway | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-gateway", daemon=True)

    def start(self) -> RunningGateway:
        self._thread.start()
        self._up.wait()
        if self._running is None:
            self._thread.join()
            raise RuntimeError("the gateway network did not start") from self._failure
        return self._running

    def close(self) -> None:
        """Stop the gateway and the network; raises what went wrong while they ran or stopped."""
        if self._token is not None and self._stop is not None:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self._failure is not None:
            raise RuntimeError("the gateway network failed") from self._failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._up.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with self._start() as running:
            self._running = running
            self._up.set()
            await self._stop.wait()
