"""The gateway's way into the overlay: the directory, links to guards, a pool of warm circuits, and
requests with failover.

A request must not wait for a circuit build, so the pool keeps POOL_CIRCUITS_PER_NODE built circuits to
each node likely to be asked (nodes of recently requested models first, then the others, up to
POOL_NODES_MAX), replaces circuits that die or grow old, and keeps idle ones alive with padding. A request
picks a node by free capacity and uses a pooled circuit to it; if the circuit or node fails before the first
chunk, it tries another node (at most REQUEST_ATTEMPTS_MAX). After the first chunk, failure is reported.

Request isolation (tp_gateway.isolation, PROTOCOL.md 8.1): a warm circuit is claimed by the isolation key of
the first request that takes it, then carries that key's requests only, until REQUESTS_PER_CIRCUIT_MAX
requests or CIRCUIT_MAX_AGE_S. At most POOL_KEYS_MAX keys hold circuits (least recently used first out), and
POOL_CIRCUITS_PER_KEY_MAX each.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import short_id
from tp_gateway.isolation import ANONYMOUS, Isolation, RecentKeys
from tp_gateway.node_backoff import NodeBackoff
from tp_gateway.openai_errors import node_error_to_api
from tp_gateway.request_trace import RequestTrace
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import NodeDescriptor, RelayDescriptor
from tp_net.protocol.directory import Directory, NewestDocument, SignedDocument
from tp_net.protocol.inference_contract import INFERENCE_SERVICE, image_urls
from tp_net.protocol.model_identity import ModelIdentity, catalogue_pins, model_identities, nodes_serving
from tp_net.protocol.path_selection import (
    GUARDS_PER_CLIENT,
    LOCAL_NETWORK_RULES,
    STRICT_RULES,
    GuardStore,
    GuardStoreError,
    PathError,
    choose_guards,
    choose_node,
    choose_path,
    circuit_hops,
)
from tp_net.protocol.sealed import SEALED_SERVICE
from tp_net.protocol.stream_deadlines import stream_deadlines
from tp_net.protocol.traffic_shaping import COVER_STREAM_OFF, CoverSchedule, CoverStream, pad_request
from tp_net.trio import message_trace
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.directory_client import KeptLinks, fetch_directory, fetch_from_guards
from tp_net.trio.host_resolution import resolve_relay_hosts
from tp_net.trio.transport import Dialer
from tp_node.directory_duties import DOCUMENT_RETRY_S, refresh_delay_s

log = logging.getLogger(__name__)

# Conditions the network will not resolve by itself soon: the message says what is wrong and what to do.
NOT_SERVABLE_CODES = frozenset({"no_directory", "no_path", "nodes_down", "no_vision_node"})

POOL_CIRCUITS_PER_NODE = 2
POOL_NODES_MAX = 8
POOL_TICK_S = 1.0
CIRCUIT_MAX_AGE_S = 600.0
# Requests one pooled circuit carries before it is retired: what a node can link by circuit alone. A build
# costs about one request's first-token wait in round trips and is done ahead by the warm pool, so 16 keeps
# builds to 1 in 16 requests of a busy key while a node links at most 16 of them (a chat's turns resend
# the conversation anyway, so linking them by content is no harder).
REQUESTS_PER_CIRCUIT_MAX = 16
# Isolation keys (tp_gateway.isolation) holding pooled circuits at once; the least recently used one's
# circuits are retired for a new key (inventing keys costs a build per request, never a wider pool).
POOL_KEYS_MAX = 32
# Pooled circuits one key holds (to different nodes, or several while its requests overlap); the key's least
# recently used one is retired before it builds another.
POOL_CIRCUITS_PER_KEY_MAX = 4
CIRCUIT_KEEPALIVE_S = 60.0
REQUEST_ATTEMPTS_MAX = 3
CIRCUIT_WAIT_TIMEOUT_S = 10.0
# A guard that could not be dialed is left out of new paths this long (while other guards remain).
GUARD_DOWN_S = 30.0
# A model listed in a directory this recently, and not now, is "gone for now" (503 with Retry-After), not
# unknown (404).
MODEL_REMEMBERED_S = 3600.0
# The guard and middle of a path that went silent are left out of new paths this long (while others remain):
# past the link silence deadline (tp_net.protocol.liveness), by when the links to a dead relay have been
# closed.
SILENT_PATH_AVOID_S = 30.0


def reads_images(node: NodeDescriptor, model_id: str) -> bool:
    """Whether `node` advertises `vision` for `model_id` in its signed descriptor."""
    return any(model.model_id == model_id and model.vision for model in node.models)


class OverlayError(TokenPlaceError):
    """A request could not be served; `code` says why (model_not_found, unavailable, overloaded, upstream,
    or the node's own error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s: int | None = None  # when to ask again (a Retry-After header), if known


@dataclass(eq=False)
class _Pooled:
    circuit: Circuit
    built_at: float
    last_used: float
    retired: bool = False  # no new request takes it (those on it finish): a hop gone or silent, key dropped
    owner: bytes | None = None  # the isolation key whose requests it carries; None: not claimed yet
    requests: int = 0
    in_flight: int = 0  # requests that claimed it and have not ended: kept open for them even if retired
    cover: CoverSchedule | None = None  # its cover stream while idle (the overlay's `cover`), if on

    def usable(self, now: float) -> bool:
        return (
            self.circuit.is_open
            and not self.retired
            and now - self.built_at < CIRCUIT_MAX_AGE_S
            and self.requests < REQUESTS_PER_CIRCUIT_MAX
        )

    @property
    def unclaimed(self) -> bool:
        return self.owner is None and self.requests == 0


@dataclass
class _Stats:
    circuits_built: int = 0
    circuit_build_failures: int = 0
    circuit_build_seconds: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1


Clock = Callable[[], float]


class Overlay:
    """`dialer` opens every link (guards, authorities); `monotonic` times the overlay's own decisions (the
    pool's ages and keepalives, guards down, silent paths, node backoff, models remembered) and `wall_clock`
    is unix time (directory validity). The defaults are the real clocks; a simulation or a test passes
    trio.current_time and a clock on trio's virtual time, and trio's own clock (MockClock) runs the
    timeouts. `pool_nodes_max` nodes are kept warm (0: none; the circuits requests build are still
    pooled and reused). `cover`: the cover stream idle pooled circuits send (off by default)."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        dialer: Dialer,
        *,
        rng: random.Random,
        guard_file: Path | None = None,
        pins: Mapping[str, bytes] | None = None,
        monotonic: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        pool_nodes_max: int = POOL_NODES_MAX,
        cover: CoverStream = COVER_STREAM_OFF,
    ) -> None:
        """`pins`: model id -> the GGUF sha256 it stands for (default: the catalogue's pinned digests)."""
        self.bootstrap = bootstrap
        self._dialer = dialer
        self._rng = rng
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._pool_nodes_max = pool_nodes_max
        self._cover = cover
        # The cover streams' own randomness (drawn only when on: the path choices stay as they were).
        self._cover_rng = random.Random(rng.getrandbits(64)) if cover.rate_cells_per_s > 0 else None
        self._guard_store = GuardStore(guard_file) if guard_file else None
        self._rules = LOCAL_NETWORK_RULES if bootstrap.local else STRICT_RULES
        self.directory: Directory | None = None
        self._pins = catalogue_pins() if pins is None else dict(pins)
        self._identities: dict[str, ModelIdentity] = {}
        self.signed_document: SignedDocument | None = None  # the directory's bytes, for sealed clients (9)
        self._guards: list[bytes] = []
        self._guards_down = _Shunned(monotonic)  # guards recently unreachable
        self._models_seen: dict[str, float] = {}  # model id -> monotonic time a directory last listed it
        self._silent_relays = _Shunned(monotonic)  # relays of paths that recently went silent
        self._links: dict[bytes, ClientLink] = {}
        self._linking: dict[bytes, trio.Event] = {}
        self._pool: dict[bytes, list[_Pooled]] = {}
        self._keys = RecentKeys(POOL_KEYS_MAX)  # the isolation keys that may hold pooled circuits
        self._building: set[bytes] = set()
        self._wanted: dict[str, float] = {}  # model id -> when last requested
        self._pool_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._directory_links: KeptLinks | None = None
        self.stats = _Stats()
        self.ready = trio.Event()
        self._paths_failed = False
        self._backoff = NodeBackoff(monotonic)
        self._path_error: PathError | None = None  # why the pool last found no path (until one is found)

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch and refresh the directory and keep the pool warm, until cancelled."""
        async with KeptLinks.open(self._dialer) as kept, trio.open_nursery() as nursery:
            self._directory_links = kept  # one link per authority, reused by every fetch
            nursery.start_soon(self._refresh_directory)
            await self.run_pool()

    async def run_pool(self) -> None:
        """Hold the guard links and keep the pool warm, until cancelled, on the directories given to
        `use_directory`: `run` gives it those it fetches; a caller with its own source of verified
        directories (the simulator's feed, a test) gives them itself."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.ready.wait()
            await self._maintain_pool()

    async def _refresh_directory(self) -> None:
        sources = [authority.hop() for authority in self.bootstrap.authorities]
        held = NewestDocument(self.bootstrap.trust())  # never a document older than the one held
        while True:
            try:
                directory = await self._fetch_directory(sources, held)
            except TokenPlaceError as exc:
                log.info(
                    "no directory yet (asking again in %.0f s; the authorities sign the first one once %d of "
                    "%d are up): %s",
                    DOCUMENT_RETRY_S,
                    self.bootstrap.threshold,
                    len(self.bootstrap.authorities),
                    exc,
                )
                await trio.sleep(DOCUMENT_RETRY_S)
                continue
            if self._rules.subnet_diversity:  # the /16 rule compares what relay hostnames resolve to
                self._rules = replace(
                    self._rules, resolved=await resolve_relay_hosts(directory.relays.values())
                )
            self.use_directory(directory)
            self.signed_document = held.document
            # A document missing a relay a path needs, or listing no node or fewer relays than guards (a
            # network still starting: authorities admit a relay only once they reached it), is replaced soon:
            # look again in a moment rather than when the next document is due.
            forming = not directory.nodes or len(directory.relays) < GUARDS_PER_CLIENT
            delay = refresh_delay_s(directory.valid_after, self.bootstrap, self._wall_clock())
            delay = DOCUMENT_RETRY_S if self._paths_failed or forming else delay
            log.info("next directory document due in %.0f s", delay)
            await trio.sleep(delay)

    async def _fetch_directory(self, authorities: list[HopInfo], held: NewestDocument) -> Directory:
        """Through our guards (directory guards: each relay caches the document, and the signatures are
        checked here), over the links paths use; from the authorities only before we have guards or when
        no guard gives one. So the authorities do not see each gateway's address and timing."""
        guards = []
        for guard_id in self._guards:
            descriptor = self.directory.relays.get(guard_id) if self.directory else None
            if descriptor is None or guard_id in self._guards_down:
                continue
            with suppress(OverlayError):
                link = await self._link_to(descriptor)
                guards.append((link, HopInfo(guard_id, descriptor.onion_keys[0], descriptor.address)))
        directory = await fetch_from_guards(guards, held, self._rng, self._wall_clock())
        if directory is None:
            directory, _ = await fetch_directory(
                self._dialer,
                authorities,
                self.bootstrap.trust(),
                self._rng,
                self._wall_clock(),
                kept=self._directory_links,
                held=held,
            )
        return directory

    def use_directory(self, directory: Directory) -> None:
        """Take a new verified directory: guards, node backoff, retired circuits, models seen."""
        self.directory = directory
        self._paths_failed = False
        relays = self._guard_candidates(directory)
        if self._guard_store is not None:
            self._guards = self._stored_guards(self._guard_store, relays)
        elif not self._guards or not all(g in {r.node_id for r in relays} for g in self._guards):
            self._guards = choose_guards(relays, self._rng, rules=self._rules, weights=directory.weights)
        self._identities = model_identities(directory.nodes.values(), self._pins)
        self._backoff.keep_only(directory.nodes)
        log.info("directory: %d relays, %d nodes", len(directory.relays), len(directory.nodes))
        self._retire_unlisted_circuits(directory)
        now = self._monotonic()
        self._models_seen.update((model_id, now) for model_id in directory.model_ids())
        self.ready.set()
        self._pool_changed.set()

    def _guard_candidates(self, directory: Directory) -> list[RelayDescriptor]:
        """The relays our guards come from: the first of these that lists GUARDS_PER_CLIENT relays. Best are
        relays that are neither authorities (as Tor avoids its authorities as guards) nor a listed node's
        home relay (a home relay as our guard would see our address and the node's, as Tor avoids exits as
        guards when it can); then relays that are no home; then no authority; then all (a new network lists
        only its authorities). Guards that are not candidates are replaced, so a gateway started on a new
        network does not keep the authorities as its guards for good."""
        relays = list(directory.relays.values())
        homes = {relay_id for node in directory.nodes.values() for relay_id in node.home_relays}
        authorities = {relay.node_id for relay in relays if self.bootstrap.entry(relay.node_id) is not None}
        for excluded in (homes | authorities, homes, authorities):
            candidates = [relay for relay in relays if relay.node_id not in excluded]
            if len(candidates) >= GUARDS_PER_CLIENT:
                return candidates
        return relays

    def _retire_unlisted_circuits(self, directory: Directory) -> None:
        """Pooled circuits through a relay or to a node the new directory no longer lists are retired (the
        hop may have gone silent); the pool builds replacements."""
        for entries in self._pool.values():
            for pooled in entries:
                hops = pooled.circuit.core.path
                listed = all(hop.node_id in directory.relays for hop in hops[:-1])
                if not listed or hops[-1].node_id not in directory.nodes:
                    pooled.retired = True

    def _retire_circuits_sharing(self, silent: Circuit) -> None:
        """A circuit's path went silent: pooled circuits through its guard or middle take no new request, and
        new paths go around those two for SILENT_PATH_AVOID_S (a preference, like `avoid`). The home relay is
        spared: it is the node's only way in, and every circuit to the node shares it."""
        relays = _suspects(silent)
        self._silent_relays.shun(relays, SILENT_PATH_AVOID_S)
        for entries in self._pool.values():
            for pooled in entries:
                if relays & _suspects(pooled.circuit):
                    pooled.retired = True

    def _weights(self) -> Mapping[bytes, int]:
        """The current document's measured weights (path selection never uses declared ones)."""
        return self.directory.weights if self.directory is not None else {}

    def _recently_silent(self) -> set[bytes]:
        return self._silent_relays.active()

    def _stored_guards(self, store: GuardStore, relays: list[RelayDescriptor]) -> list[bytes]:
        """The guard file's guards that the directory still lists (topped up). A guard file that cannot be
        read or is corrupt is replaced by new guards, never a reason to stop: it would stop every restart."""
        try:
            return store.guards_for(relays, self._rng, self._rules, self._weights())
        except GuardStoreError as exc:
            log.warning("%s: choosing new guards", exc)
        guards = choose_guards(relays, self._rng, rules=self._rules, weights=self._weights())
        try:
            store.save(guards)
        except GuardStoreError as exc:
            log.warning("%s", exc)
        return guards

    # --- models -------------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        return sorted(self._identities)

    def model_identity(self, model_id: str) -> ModelIdentity | None:
        """The GGUF sha256 `model_id` stands for in the current directory (tp_net.protocol.model_identity)."""
        return self._identities.get(model_id)

    def _nodes_for(self, model_id: str) -> list[NodeDescriptor]:
        """The nodes that offer `model_id` with the file it stands for: the only ones it is routed to."""
        nodes = self.directory.nodes.values() if self.directory else ()
        return nodes_serving(nodes, model_id, self._identities.get(model_id))

    def model_created(self, model_id: str) -> int:
        """When the model first appears among the nodes of the current directory (its oldest descriptor)."""
        return min((node.published for node in self._nodes_for(model_id)), default=int(self._wall_clock()))

    # --- requests -----------------------------------------------------------------------------

    async def generate(
        self,
        model_id: str,
        document: Mapping[str, Any],
        trace: RequestTrace | None = None,
        *,
        isolation: Isolation = ANONYMOUS,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The node's chunk documents for `document`, with failover before the first chunk; `trace`, if
        given, is kept up to date with the attempts. Only requests of the same `isolation` key share its
        circuit (tp_gateway.isolation)."""
        trace = trace if trace is not None else RequestTrace()
        self._wanted[model_id] = self._monotonic()
        if self.directory is None:
            raise OverlayError(
                "no_directory",
                f"no directory of network {self.bootstrap.network!r} yet: its authorities sign the first "
                f"one once {self.bootstrap.threshold} of the {len(self.bootstrap.authorities)} in the "
                "bootstrap file are up, and the gateway asks for it every few seconds; start the authorities "
                "(or check that their addresses in the bootstrap file are right)",
            )
        candidates = self._candidates(model_id, document)
        failure = OverlayError("unavailable", "no node serving the model could be reached")
        tried: set[bytes] = set()
        path_failed: set[bytes] = set()  # nodes whose circuit broke: another path may still reach them
        avoid: set[bytes] = set()  # relays of paths that broke: later attempts go around them
        alive = [n for n in candidates if self._backoff.may_try(n.node_id)]
        all_backed_off = not alive
        if all_backed_off and self._path_error is not None:  # not down: no path reaches them
            raise self._path_advice(self._path_error)
        # A request still tries nodes the pool backs off from: the relay that failed their warm-up may be
        # what is down, and this request's paths go around it.
        alive = alive or candidates
        for _ in range(REQUEST_ATTEMPTS_MAX):
            untried = [n for n in alive if n.node_id not in tried]
            retry = [n for n in alive if n.node_id in path_failed]
            node = choose_node(untried or retry, model_id, self._rng, weights=self._weights())
            if node is None:
                break
            tried.add(node.node_id)
            attempt = self._attempt(node, document, avoid, trace, isolation)
            async with aclosing(attempt) as chunks:
                try:
                    first = await chunks.__anext__()
                except _RetryableFailure as exc:
                    failure = exc.error
                    if failure.code == "unavailable":
                        path_failed.add(node.node_id)
                    continue
                except StopAsyncIteration:
                    failure = OverlayError("upstream", "the node ended the answer without a word")
                    continue
                self.stats.count("ok")
                self._backoff.succeeded(node.node_id)
                yield first
                try:
                    async for chunk in chunks:
                        yield chunk
                except _RetryableFailure as exc:
                    self.stats.count("failed_mid_stream")
                    error = exc.error
                    if error.code == "unavailable":  # not "no capacity": the circuit or node died mid-answer
                        error = OverlayError("upstream", f"the answer broke off: {error}")
                    raise error from None
                return
        self.stats.count(failure.code)
        if all_backed_off and failure.code == "unavailable":
            raise self._all_down(model_id, candidates)
        raise failure

    async def forward_sealed(self, node_id: bytes, sealed: bytes) -> AsyncGenerator[bytes, None]:
        """A sealed request's chunks (PROTOCOL.md 9), carried over a circuit to the node it names. No
        failover: the request opens only at that node, and only once (a second try is refused as a replay);
        only a failed build, before anything is sent, is tried again (`_sealed_circuit`).
        Each sealed request has a circuit to itself (isolation None): a public gateway's sealed clients are
        strangers to each other, and one address may be many of them."""
        node = self.directory.nodes.get(node_id) if self.directory is not None else None
        if node is None:
            raise OverlayError("node_not_found", "the directory lists no such node")
        pooled: _Pooled | None = None
        try:
            with trio.fail_after(CIRCUIT_WAIT_TIMEOUT_S):
                pooled = await self._sealed_circuit(node)
            answer = _within_deadlines(
                pooled.circuit, SEALED_SERVICE, {"sealed": sealed}, self._retire_circuits_sharing
            )
            async with aclosing(answer) as messages:
                async for message in messages:
                    error = message.get("error") if isinstance(message, dict) else None
                    if isinstance(error, dict):
                        raise _node_error(error)
                    chunk = message.get("sealed") if isinstance(message, dict) else None
                    if not isinstance(chunk, bytes):
                        raise OverlayError("upstream", "the node sent a message that is not a sealed chunk")
                    yield chunk
        except (TokenPlaceError, trio.TooSlowError) as exc:
            if isinstance(exc, OverlayError):
                raise
            log.info("sealed request to node %s failed: %s", short_id(node_id), exc.__class__.__name__)
            raise OverlayError("unavailable", f"node failed ({exc.__class__.__name__})") from exc
        finally:
            self._release(pooled)

    async def _sealed_circuit(self, node: NodeDescriptor) -> _Pooled:
        """A circuit of its own for a sealed request. Nothing is sent before it is built, so a failed build is
        tried again around the relay it points at (`_build`'s avoid set), as a plaintext request's attempts
        are: at most REQUEST_ATTEMPTS_MAX builds."""
        avoid: set[bytes] = set()
        for _ in range(REQUEST_ATTEMPTS_MAX - 1):
            try:
                return await self._circuit_to(node, avoid, RequestTrace(), None)
            except PathError:
                raise
            except TokenPlaceError as exc:
                log.info("a sealed request's circuit failed (%s): building another", exc.__class__.__name__)
        return await self._circuit_to(node, avoid, RequestTrace(), None)

    def _candidates(self, model_id: str, document: Mapping[str, Any]) -> list[NodeDescriptor]:
        """The nodes that may serve `document`: those of the model, and only those that read images for a
        request with images."""
        candidates = self._nodes_for(model_id)
        if not candidates:
            raise self._no_node_for(model_id)
        if image_urls(document):  # only nodes that loaded the model's projector read images
            candidates = [node for node in candidates if reads_images(node, model_id)]
            if not candidates:
                raise OverlayError(
                    "no_vision_node",
                    f"no node serving {model_id!r} reads images (none was started with the model's "
                    "projector, --mmproj); send text only, or pick a model whose nodes read images",
                )
        return candidates

    def _all_down(self, model_id: str, nodes: list[NodeDescriptor]) -> OverlayError:
        longest = max((self._backoff.down_for_s(n.node_id) or 0.0) for n in nodes)
        return OverlayError(
            "nodes_down",
            f"every node that serves {model_id!r} ({len(nodes)} in the directory) has been unreachable, "
            f"one for {longest:.0f} s: their operators may have stopped them (the directory drops a node "
            f"within a period, {self.bootstrap.period_s} s, of it leaving); the gateway keeps trying them "
            "less often. Pick another model from /v1/models, or start a node that serves this one",
        )

    def _path_advice(self, exc: PathError) -> OverlayError:
        if self.bootstrap.local:
            advice = "the network needs more relays (a path takes three different ones)"
        else:
            advice = (
                'paths take relays of different IPv4 /16s: a network on one host needs "local": true in '
                "its bootstrap file (python -m bootstrap.new_network sets it when every authority is in one "
                "/16), a real one more relays in other /16s"
            )
        return OverlayError("no_path", f"no path through the network to a node: {exc}; {advice}")

    def _no_node_for(self, model_id: str) -> OverlayError:
        """Why no node serves `model_id`: gone for now ("model_gone", with when to retry) if a directory
        listed it within MODEL_REMEMBERED_S, else never seen ("model_not_found")."""
        seen = self._models_seen.get(model_id)
        if seen is not None and self._monotonic() - seen < MODEL_REMEMBERED_S:
            error = OverlayError("model_gone", f"no node serves model {model_id!r} right now")
            error.retry_after_s = max(1, math.ceil(self.bootstrap.period_s / 2))  # the next directory
            return error
        return OverlayError("model_not_found", f"no node in the directory serves model {model_id!r}")

    async def _attempt(
        self,
        node: NodeDescriptor,
        document: Mapping[str, Any],
        avoid: set[bytes],
        trace: RequestTrace,
        isolation: Isolation,
    ) -> AsyncGenerator[dict[str, Any], None]:
        trace.attempt(node.node_id)
        pooled: _Pooled | None = None
        try:
            try:
                with trio.fail_after(CIRCUIT_WAIT_TIMEOUT_S):
                    pooled = await self._circuit_to(node, avoid, trace, isolation)
            except (TokenPlaceError, trio.TooSlowError):
                trace.circuit_failures += 1
                raise
            message_trace.mark("gw_circuit")
            circuit = pooled.circuit
            trace.path = tuple(hop.node_id for hop in circuit.core.path[:-1])
            trace.circuit_at = self._monotonic()
            padded = pad_request(dict(document))  # to a size bucket (tp_net.protocol.traffic_shaping)
            answer = _within_deadlines(circuit, INFERENCE_SERVICE, padded, self._retire_circuits_sharing)
            async with aclosing(answer) as chunks:
                async for chunk in chunks:
                    error = chunk.get("error") if isinstance(chunk, dict) else None
                    if isinstance(error, dict):
                        raise _node_error(error)
                    yield chunk
        except (TokenPlaceError, trio.TooSlowError) as exc:
            if isinstance(exc, OverlayError) and not node_error_to_api(exc.code, str(exc)).retry_elsewhere:
                raise
            if isinstance(exc, PathError):
                raise _RetryableFailure(self._path_advice(exc)) from exc
            log.info("node %s failed: %s", short_id(node.node_id), exc.__class__.__name__)
            if isinstance(exc, OverlayError):  # the node's own error: keep its message
                raise _RetryableFailure(exc) from exc
            raise _RetryableFailure(
                OverlayError("unavailable", f"node failed ({exc.__class__.__name__})")
            ) from exc
        finally:
            self._release(pooled)

    # --- the circuit pool ---------------------------------------------------------------------

    async def _circuit_to(
        self, node: NodeDescriptor, avoid: set[bytes], trace: RequestTrace, isolation: Isolation
    ) -> _Pooled:
        """A circuit of `isolation`'s to `node`: one it holds, else a warm one it claims, else a new one;
        the caller releases it when its request ends (`_release`). The key bounds are applied before a
        circuit is claimed or built (tp_gateway.isolation)."""
        now = self._monotonic()
        entries = self._pool.get(node.node_id, [])
        own = [p for p in entries if p.usable(now) and isolation is not None and p.owner == isolation]
        if own:
            choice = min(own, key=lambda p: p.circuit.core.edge.stream_count)
            trace.pooled = True
        else:
            self._bound_key(isolation, now)  # before the build or claim it guards
            warm = [p for p in entries if p.usable(now) and p.unclaimed]
            trace.pooled = bool(warm)
            self._pool_changed.set()  # a warm circuit to replace, or a build under way
            choice = warm[0] if warm else await self._build(node, avoid)
        self._claim(choice, isolation)
        self._bound_key(isolation, self._monotonic(), keep=choice)  # its requests overlapped: builds raced
        return choice

    def _claim(self, pooled: _Pooled, isolation: Isolation) -> None:
        """`pooled` carries one more request of `isolation` (a circuit of None's takes no other request)."""
        pooled.owner = isolation
        pooled.requests += 1
        pooled.in_flight += 1
        pooled.last_used = self._monotonic()
        if isolation is None:
            pooled.retired = True

    def _release(self, pooled: _Pooled | None) -> None:
        """A request that claimed `pooled` ended: a retired circuit it kept open may go now."""
        if pooled is not None:
            pooled.in_flight -= 1
            self._pool_changed.set()

    def _bound_key(self, isolation: Isolation, now: float, keep: _Pooled | None = None) -> None:
        """The keys past POOL_KEYS_MAX lose their circuits (least recently used first out), and
        `isolation` keeps at most POOL_CIRCUITS_PER_KEY_MAX - 1 besides `keep` (its least recently used
        are retired): room for the one it claims or builds."""
        if isolation is None:
            return
        dropped = set(self._keys.use(isolation))
        held: list[_Pooled] = []
        for entries in self._pool.values():
            for pooled in entries:
                if pooled.owner in dropped:
                    pooled.retired = True
                elif pooled.owner == isolation and pooled.usable(now) and pooled is not keep:
                    held.append(pooled)
        held.sort(key=lambda p: p.last_used)
        for pooled in held[: max(0, len(held) - POOL_CIRCUITS_PER_KEY_MAX + 1)]:
            pooled.retired = True

    async def _build(self, node: NodeDescriptor, avoid: set[bytes] | None = None) -> _Pooled:
        """A new pooled circuit to `node`; when it fails, the relay to blame is added to `avoid`."""
        directory = self.directory
        if directory is None:
            raise OverlayError("unavailable", "no directory yet")
        started = self._monotonic()
        suspect: bytes | None = None  # the relay a failure points at: the guard, or else the middle
        try:
            path = self._choose_path(directory, node, avoid or set())
            suspect = path[0].node_id
            link = await self._link_to(path[0])
            suspect = path[1].node_id  # the guard answers; the home relay is the only way to the node
            circuit = await link.build_circuit(circuit_hops(path, node))
        except TokenPlaceError as exc:
            self.stats.circuit_build_failures += 1
            self._paths_failed |= isinstance(exc, PathError)
            if avoid is not None and suspect is not None:
                avoid.add(suspect)
            raise
        self.stats.circuits_built += 1
        self.stats.circuit_build_seconds += self._monotonic() - started
        pooled = _Pooled(circuit, self._monotonic(), self._monotonic())
        if self._cover_rng is not None:
            pooled.cover = CoverSchedule(self._cover, random.Random(self._cover_rng.getrandbits(64)))
        self._pool.setdefault(node.node_id, []).append(pooled)
        self._pool_changed.set()  # a new circuit to tend
        return pooled

    def _choose_path(
        self, directory: Directory, node: NodeDescriptor, avoid: set[bytes]
    ) -> list[RelayDescriptor]:
        """A path around the relays in `avoid` and the guards recently down if there is one, else any path:
        both are preferences (a guard marked down may be back), never a reason to fail."""
        relays = list(directory.relays.values())
        avoid = avoid | self._recently_silent()
        spared = [relay for relay in relays if relay.node_id not in avoid]
        usable = self._usable_guards()
        options = ((spared, usable), (spared, self._guards), (relays, usable), (relays, self._guards))
        for choice, guards in options:
            with suppress(PathError):
                return choose_path(
                    choice, node, guards, self._rng, rules=self._rules, weights=directory.weights
                )
        # raises the reason
        return choose_path(
            relays, node, self._guards, self._rng, rules=self._rules, weights=directory.weights
        )

    def _usable_guards(self) -> list[bytes]:
        """Our guards, less those recently unreachable (all of them if every one was)."""
        down = self._guards_down.active()
        usable = [guard for guard in self._guards if guard not in down]
        return usable or self._guards

    async def _link_to(self, guard: Any) -> ClientLink:
        link = self._links.get(guard.node_id)
        if link is not None and not link.closed:
            return link
        waiting = self._linking.get(guard.node_id)
        if waiting is None:
            assert self._nursery is not None
            waiting = self._linking[guard.node_id] = trio.Event()
            self._nursery.start_soon(
                self._hold_link, HopInfo(guard.node_id, guard.onion_keys[0], guard.address)
            )
        await waiting.wait()
        link = self._links.get(guard.node_id)
        if link is None or link.closed:
            raise OverlayError("unavailable", f"guard {short_id(guard.node_id)} is unreachable")
        return link

    async def _hold_link(self, guard: HopInfo) -> None:
        try:
            async with ClientLink.connect(self._dialer, guard, rng=self._rng) as link:
                self._links[guard.node_id] = link
                self._linking.pop(guard.node_id).set()
                await link.lost.wait()
        except Exception as exc:  # the gateway's edge: whatever a dial raises costs only this guard's link
            log.info("link to guard %s failed: %s", short_id(guard.node_id), exc.__class__.__name__)
            self._guards_down.shun([guard.node_id], GUARD_DOWN_S)
        finally:
            self._links.pop(guard.node_id, None)
            event = self._linking.pop(guard.node_id, None)
            if event is not None:
                event.set()
            self._pool_changed.set()

    @property
    def pooled_circuits(self) -> int:
        now = self._monotonic()
        return sum(1 for entries in self._pool.values() for p in entries if p.usable(now))

    async def _maintain_pool(self) -> None:
        while True:
            # Tended each POOL_TICK_S; an overlay that keeps no node warm and holds no circuit has nothing
            # to tend until a request or a directory changes that (a simulator's many idle clients).
            idle = not self._pool and self._pool_nodes_max <= 0
            with trio.move_on_after(math.inf if idle else POOL_TICK_S):
                await self._pool_changed.wait()
            self._pool_changed = trio.Event()
            self._tend_pool()

    def _tend_pool(self) -> None:
        now = self._monotonic()
        for node_id, entries in list(self._pool.items()):
            for pooled in list(entries):
                idle = pooled.circuit.core.edge.stream_count == 0 and pooled.in_flight == 0
                if not pooled.usable(now) and idle:
                    if pooled.circuit.is_open:
                        pooled.circuit.destroy()
                    entries.remove(pooled)
                elif pooled.circuit.is_open:
                    if now - pooled.last_used > CIRCUIT_KEEPALIVE_S:
                        pooled.circuit.send_drop()
                        pooled.last_used = now
                    for _ in range(pooled.cover.cells_due(now, idle=idle) if pooled.cover else 0):
                        pooled.circuit.send_drop()
            if not entries:
                del self._pool[node_id]
        for node in self._pool_targets():
            warm = sum(1 for p in self._pool.get(node.node_id, []) if p.usable(now) and p.unclaimed)
            if warm < POOL_CIRCUITS_PER_NODE and node.node_id not in self._building:
                assert self._nursery is not None
                self._building.add(node.node_id)
                self._nursery.start_soon(self._warm, node)

    def _pool_targets(self) -> list[NodeDescriptor]:
        if self.directory is None or self._pool_nodes_max <= 0:
            return []

        def priority(node: NodeDescriptor) -> tuple[float, int]:
            recent = max((self._wanted.get(m.model_id, 0.0) for m in node.models), default=0.0)
            return (-recent, -sum(m.free_slots for m in node.models))

        nodes = [n for n in self.directory.nodes.values() if self._backoff.may_try(n.node_id)]
        return sorted(nodes, key=priority)[: self._pool_nodes_max]

    async def _warm(self, node: NodeDescriptor) -> None:
        try:
            await self._build(node)
        except TokenPlaceError as exc:
            self._backoff.failed(node.node_id, f"warming a circuit failed: {exc}")
            if isinstance(exc, PathError):
                self._path_error = exc
        else:
            self._backoff.succeeded(node.node_id)
            self._path_error = None
        finally:
            self._building.discard(node.node_id)
            self._pool_changed.set()


async def _within_deadlines(
    circuit: Circuit, service: str, document: Mapping[str, Any], on_silent: Callable[[Circuit], None]
) -> AsyncGenerator[Any, None]:
    """The answer's messages, each within its deadline (tp_net.protocol.stream_deadlines); when one passes,
    the circuit is destroyed (its path went silent: no later request may use it), `on_silent` hears of it, and
    trio.TooSlowError is raised."""
    deadlines = stream_deadlines(len(circuit.core.path), circuit.built_in_s)
    wait_s = deadlines.first_chunk_s
    async with aclosing(circuit.request(service, dict(document))) as messages:
        while True:
            with trio.move_on_after(wait_s) as waited:
                try:
                    message = await messages.__anext__()
                except StopAsyncIteration:
                    return
            if waited.cancelled_caught:
                log.info("no chunk within %.1f s: dropping the circuit", wait_s)
                circuit.destroy(DestroyReason.TIMEOUT)
                on_silent(circuit)
                raise trio.TooSlowError
            yield message
            wait_s = deadlines.chunk_gap_s


def _suspects(circuit: Circuit) -> set[bytes]:
    """The relays of a circuit that may have made it silent, and that another path can do without: its guard
    and middle (not its home relay, the last relay, nor the node)."""
    return {hop.node_id for hop in circuit.core.path[:-2]}


class _RetryableFailure(Exception):
    def __init__(self, error: OverlayError) -> None:
        super().__init__(str(error))
        self.error = error


def _node_error(error: Mapping[str, Any]) -> OverlayError:
    code = error.get("code")
    message = error.get("message")
    return OverlayError(
        code if isinstance(code, str) else "upstream", message if isinstance(message, str) else ""
    )


class _Shunned:
    """Relays left out of new paths for a while (a preference, never a ban): id -> monotonic time it is
    forgiven. Expired entries are dropped when asked, so the map holds only relays shunned now."""

    def __init__(self, monotonic: Clock) -> None:
        self._clock = monotonic
        self._until: dict[bytes, float] = {}

    def shun(self, relays: Iterable[bytes], seconds: float) -> None:
        until = self._clock() + seconds
        for relay in relays:
            self._until[relay] = until

    def active(self) -> set[bytes]:
        now = self._clock()
        self._until = {relay: until for relay, until in self._until.items() if until > now}
        return set(self._until)

    def __contains__(self, relay: object) -> bool:
        return relay in self.active()
