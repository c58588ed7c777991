"""Path selection: which relays a circuit goes through, and which GPU node serves a model.

Everything here is a pure function of the directory and an explicit `random.Random`, so a seed fixes
every choice (simulations, tests). The only I/O is `GuardStore`, which keeps a client's guards on disk.

Every weight is the directory document's measured one (`Directory.weights`,
tp_net.protocol.bandwidth_weights), never what a relay or node declares about itself; an id without one weighs
WEIGHT_MIN, so a caller that passes no weights chooses uniformly.

A circuit is [guard, middle, home relay] followed by the GPU node (PROTOCOL.md section 5):
- the home relay is one of the node's home relays (the node keeps a link to it), weighted;
- the guard is the client's first pinned guard that can be used with that home relay, so one client keeps
  showing its address to the same few relays instead of, over time, to all of them;
- the middle is weighted among the relays diverse from both.
"Diverse" (`PathRules`) means: not the same relay, not the same IPv4 /16 (IPv6 /32), not the same declared
operator family, so that one operator or one network cannot easily hold two hops of a circuit. A relay named
by hostname is in the network its name resolved to (`PathRules.resolved`, filled by the caller's trio edge).
No relay of a circuit shares the GPU node's declared family or identity key (`serves_node`); a node's
address is never published, so the /16 rule cannot apply between a relay and a node.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import random
import tempfile
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import NODE_ID_BYTES, short_id
from tp_net.protocol.bandwidth_weights import weight_of
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor, RelayDescriptor

_T = TypeVar("_T")

GUARDS_PER_CLIENT = 3
PATH_RELAYS = 3  # guard, middle, home relay
IPV4_SUBNET_PREFIX_BITS = 16
IPV6_SUBNET_PREFIX_BITS = 32
GUARD_FILE_VERSION = 1
SUBNET_KEYS_CACHED = 16_384  # address parsing dominates path selection; a directory's worth of keys
GUARD_FILE_MODE = 0o600  # which relays a client uses is private: they could help link its circuits
GUARD_FILE_BYTES_MAX = 64 * 1024
NO_WEIGHTS: Mapping[bytes, int] = types.MappingProxyType({})


class PathError(TokenPlaceError):
    """No circuit path satisfies the rules with this directory; the message says what was missing."""


class GuardStoreError(TokenPlaceError):
    """The guard file cannot be read or written, or is corrupt; the message names the file."""


@dataclass(frozen=True)
class PathRules:
    """Which diversity rules a circuit's relays must satisfy pairwise.

    Local test networks run every relay on 127.0.0.1, so they pass `subnet_diversity=False`
    (`LOCAL_NETWORK_RULES`); every real network keeps the defaults (`STRICT_RULES`).
    """

    subnet_diversity: bool = True  # no two relays in the same IPv4 /16 (IPv6 /32, or the same hostname)
    family_diversity: bool = True  # no two relays (nor a relay and the node) with one non-empty family
    # hostname (lowercase) -> the IP literal it resolved to: the /16 rule compares what names resolve to
    resolved: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


STRICT_RULES = PathRules()
LOCAL_NETWORK_RULES = PathRules(subnet_diversity=False)


# --- diversity --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=SUBNET_KEYS_CACHED)
def subnet_key(address: str) -> str:
    """The network a relay address is in: its IPv4 /16, its IPv6 /32, or else its lowercase hostname.

    A hostname that is not an IP literal is only its own network: we do no DNS here (pure, no I/O).
    """
    try:
        host = urlsplit(address).hostname
    except ValueError:  # e.g. an unclosed "[" in an IPv6 literal
        host = None
    if not host:
        return address.lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 host a.b.c.d
    prefix = IPV4_SUBNET_PREFIX_BITS if ip.version == 4 else IPV6_SUBNET_PREFIX_BITS
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def network_key(address: str, rules: PathRules) -> str:
    """`subnet_key` of the address, or of the IP its hostname resolved to when the caller resolved it."""
    key = subnet_key(address)
    ip = rules.resolved.get(key)
    return subnet_key(f"ws://{_bracketed(ip)}/") if ip is not None else key


def _bracketed(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def diverse(a: RelayDescriptor, b: RelayDescriptor, rules: PathRules = STRICT_RULES) -> bool:
    """True when `a` and `b` may share a circuit: distinct relays that no rule puts together."""
    if a.node_id == b.node_id:
        return False
    if rules.subnet_diversity and network_key(a.address, rules) == network_key(b.address, rules):
        return False
    return not (rules.family_diversity and a.family and a.family == b.family)


def serves_node(relay: RelayDescriptor, node: NodeDescriptor, rules: PathRules = STRICT_RULES) -> bool:
    """True when `relay` may be on a circuit to `node`: not the node's own identity key, not its family."""
    if relay.node_id == node.node_id:
        return False
    return not (rules.family_diversity and node.family and relay.family == node.family)


def _diverse_from_all(relay: RelayDescriptor, others: Iterable[RelayDescriptor], rules: PathRules) -> bool:
    return all(diverse(relay, other, rules) for other in others)


# --- weighted choices -------------------------------------------------------------------------------


def _weighted_choice(items: Sequence[_T], weights: Sequence[float], rng: random.Random) -> _T:
    return rng.choices(items, weights=weights)[0]


def _by_weight(
    relays: Sequence[RelayDescriptor], weights: Mapping[bytes, int], rng: random.Random
) -> RelayDescriptor:
    return _weighted_choice(relays, [weight_of(weights, relay.node_id) for relay in relays], rng)


def _directory(relays: Iterable[RelayDescriptor]) -> dict[bytes, RelayDescriptor]:
    return {relay.node_id: relay for relay in relays}


# --- guards -----------------------------------------------------------------------------------------


def choose_guards(
    relays: Sequence[RelayDescriptor],
    rng: random.Random,
    *,
    count: int = GUARDS_PER_CLIENT,
    rules: PathRules = STRICT_RULES,
    weights: Mapping[bytes, int] = NO_WEIGHTS,
) -> list[bytes]:
    """`count` distinct relays (fewer if the directory is smaller), weighted, in order of preference.

    Each new guard is diverse from the ones before it when any relay left is, so that when the first guard
    cannot be used with a home relay (same /16 or family), the next one likely can.
    """
    return _top_up([], _directory(relays), rng, count, rules=rules, weights=weights)


def keep_and_top_up(
    kept: Sequence[bytes],
    relays: Sequence[RelayDescriptor],
    rng: random.Random,
    *,
    count: int,
    rules: PathRules = STRICT_RULES,
    weights: Mapping[bytes, int] = NO_WEIGHTS,
) -> list[bytes]:
    """The relays of `kept` that `relays` still lists, then weighted ones (each diverse from those before it
    when any relay left is) up to `count`: a GPU node's home relays."""
    directory = _directory(relays)
    kept_relays = [directory[node_id] for node_id in kept if node_id in directory]
    return _top_up(kept_relays, directory, rng, count, rules=rules, weights=weights)


def _top_up(
    kept: list[RelayDescriptor],
    directory: Mapping[bytes, RelayDescriptor],
    rng: random.Random,
    count: int,
    *,
    rules: PathRules,
    weights: Mapping[bytes, int],
) -> list[bytes]:
    chosen = list(kept)
    while len(chosen) < count:
        chosen_ids = {relay.node_id for relay in chosen}
        unused = [relay for relay in directory.values() if relay.node_id not in chosen_ids]
        if not unused:
            break
        diverse_ones = [relay for relay in unused if _diverse_from_all(relay, chosen, rules)]
        chosen.append(_by_weight(diverse_ones or unused, weights, rng))
    return [relay.node_id for relay in chosen]


# --- model choice -----------------------------------------------------------------------------------


def _offer(node: NodeDescriptor, model_id: str) -> ModelOffer | None:
    return next((offer for offer in node.models if offer.model_id == model_id), None)


def choose_node(
    nodes: Sequence[NodeDescriptor],
    model_id: str,
    rng: random.Random,
    *,
    weights: Mapping[bytes, int] = NO_WEIGHTS,
) -> NodeDescriptor | None:
    """A node serving `model_id`, weighted by its measured weight times the share of its slots that is free;
    None when no node offers it.

    Nodes with no free slot are chosen only when all are full (the request then queues somewhere), weighted
    by their measured weight alone. The declared slots only ever lower a node's chance (a node can claim to
    be idle, never to be large).
    """
    offers = [(node, offer) for node in nodes if (offer := _offer(node, model_id)) is not None]
    if not offers:
        return None
    free = [
        (node, weight_of(weights, node.node_id) * offer.free_slots / offer.max_concurrent)
        for node, offer in offers
        if offer.free_slots > 0
    ]
    candidates = free or [(node, float(weight_of(weights, node.node_id))) for node, _ in offers]
    return _weighted_choice([node for node, _ in candidates], [weight for _, weight in candidates], rng)


# --- paths ------------------------------------------------------------------------------------------


def choose_path(
    relays: Sequence[RelayDescriptor],
    node: NodeDescriptor,
    guards: Sequence[bytes],
    rng: random.Random,
    *,
    rules: PathRules = STRICT_RULES,
    weights: Mapping[bytes, int] = NO_WEIGHTS,
) -> list[RelayDescriptor]:
    """[guard, middle, home relay] for a circuit to `node`; PathError when no valid path exists.

    The home relay is weighted among the node's home relays in the directory through which some
    valid path exists. For it, the guard is the first of `guards` (most preferred first) that is in the
    directory, diverse from the home relay, and leaves at least one middle; the middle is weighted among the
    relays diverse from both.
    """
    directory = _directory(relay for relay in relays if serves_node(relay, node, rules))
    homes = _home_relays(directory, node)
    if not homes:
        raise PathError(
            f"no home relay of node {short_id(node.node_id)} is in the directory (outside the node's family)"
        )
    candidates = list(homes)
    while candidates:
        # Drawing again without a home that has no path is drawing among the homes that have one.
        home = _by_weight(candidates, weights, rng)
        option = _guard_and_middles(home, guards, directory, rules)
        if option is not None:
            guard, middles = option
            return [guard, _by_weight(middles, weights, rng), home]
        candidates.remove(home)
    raise _why_no_path(node, homes, guards, directory, rules)


def _home_relays(directory: Mapping[bytes, RelayDescriptor], node: NodeDescriptor) -> list[RelayDescriptor]:
    home_ids = dict.fromkeys(node.home_relays)  # a node listing a relay twice does not double its weight
    return [directory[relay_id] for relay_id in home_ids if relay_id in directory]


def _usable_guards(
    home: RelayDescriptor,
    guards: Sequence[bytes],
    directory: Mapping[bytes, RelayDescriptor],
    rules: PathRules,
) -> list[RelayDescriptor]:
    """The client's guards that are in the directory and may share a circuit with `home`, in order."""
    present = [directory[guard_id] for guard_id in dict.fromkeys(guards) if guard_id in directory]
    return [guard for guard in present if diverse(guard, home, rules)]


def _middles(
    guard: RelayDescriptor,
    home: RelayDescriptor,
    directory: Mapping[bytes, RelayDescriptor],
    rules: PathRules,
) -> list[RelayDescriptor]:
    return [relay for relay in directory.values() if _diverse_from_all(relay, (guard, home), rules)]


def _guard_and_middles(
    home: RelayDescriptor,
    guards: Sequence[bytes],
    directory: Mapping[bytes, RelayDescriptor],
    rules: PathRules,
) -> tuple[RelayDescriptor, list[RelayDescriptor]] | None:
    for guard in _usable_guards(home, guards, directory, rules):
        middles = _middles(guard, home, directory, rules)
        if middles:
            return guard, middles
    return None


def _why_no_path(
    node: NodeDescriptor,
    homes: Sequence[RelayDescriptor],
    guards: Sequence[bytes],
    directory: Mapping[bytes, RelayDescriptor],
    rules: PathRules,
) -> PathError:
    for home in homes:
        usable = _usable_guards(home, guards, directory, rules)
        if usable:
            return PathError(
                f"no middle relay diverse from guard {short_id(usable[0].node_id)} and home relay "
                f"{short_id(home.node_id)} of node {short_id(node.node_id)} is in the directory"
            )
    present = sum(1 for guard_id in set(guards) if guard_id in directory)
    return PathError(
        f"no usable guard: {present} of the client's {len(set(guards))} guards are in the directory, "
        f"and none is diverse from a home relay of node {short_id(node.node_id)}"
    )


def circuit_hops(path: Sequence[RelayDescriptor], node: NodeDescriptor) -> list[HopInfo]:
    """The hops `ClientCircuit` builds through: the relays of `path`, then the node (no address: the home
    relay reaches it over the link the node keeps open). Each hop is reached with its newest onion key."""
    hops = [HopInfo(relay.node_id, relay.onion_keys[0], relay.address) for relay in path]
    return [*hops, HopInfo(node.node_id, node.onion_keys[0])]


# --- guards kept across restarts --------------------------------------------------------------------


class GuardStore:
    """A client's guards in a small JSON file, so a restart does not make it pick new ones.

    File: {"version": 1, "guards": [hex node id, ...]}, most preferred first, mode 0600, replaced
    atomically (temp file + rename) so a crash never leaves a half-written file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def guards_for(
        self,
        relays: Sequence[RelayDescriptor],
        rng: random.Random,
        rules: PathRules = STRICT_RULES,
        weights: Mapping[bytes, int] = NO_WEIGHTS,
    ) -> list[bytes]:
        """The stored guards still in the directory, topped up to GUARDS_PER_CLIENT with new ones; saved."""
        directory = _directory(relays)
        stored = self.load()
        kept = [directory[guard_id] for guard_id in stored if guard_id in directory]
        guards = _top_up(kept, directory, rng, GUARDS_PER_CLIENT, rules=rules, weights=weights)
        if guards != stored or not self.path.exists():
            self.save(guards)
        return guards

    def load(self) -> list[bytes]:
        """The stored guards, most preferred first; empty when there is no file yet."""
        try:
            with self.path.open("rb") as file:
                data = file.read(GUARD_FILE_BYTES_MAX + 1)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise GuardStoreError(f"guard file {self.path} cannot be read: {exc}") from exc
        if len(data) > GUARD_FILE_BYTES_MAX:
            raise GuardStoreError(
                f"guard file {self.path} is corrupt: larger than {GUARD_FILE_BYTES_MAX} bytes"
            )
        return _parse_guard_file(self.path, data)

    def save(self, guards: Sequence[bytes]) -> None:
        text = json.dumps({"version": GUARD_FILE_VERSION, "guards": [guard.hex() for guard in guards]})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.path, text.encode("ascii"))
        except OSError as exc:
            raise GuardStoreError(f"guard file {self.path} cannot be written: {exc}") from exc


def _parse_guard_file(path: Path, data: bytes) -> list[bytes]:
    try:
        document: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GuardStoreError(f"guard file {path} is corrupt: not JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("version") != GUARD_FILE_VERSION:
        raise GuardStoreError(f"guard file {path} is corrupt: not a version {GUARD_FILE_VERSION} guard file")
    entries = document.get("guards")
    if not isinstance(entries, list) or not all(_is_node_id_hex(entry) for entry in entries):
        raise GuardStoreError(f"guard file {path} is corrupt: 'guards' is not a list of hex node ids")
    return list(dict.fromkeys(bytes.fromhex(entry) for entry in entries))


def _is_node_id_hex(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return len(bytes.fromhex(value)) == NODE_ID_BYTES and value == bytes.fromhex(value).hex()
    except ValueError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    # mkstemp creates the file with mode 0600; the rename replaces the old file (and its mode) in one step.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_path, GUARD_FILE_MODE)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
