"""Bootstrap files: which network a client joins and which authorities it trusts.

    {"network": "...", "threshold": 2, "period_s": 300, "local": false,
     "authorities": [{"node_id": "<64 hex>", "address": "ws://host:port/"}, ...]}

A fresh install trusts `bootstrap/default.json`. Point any role at another network with `--bootstrap FILE`
or the environment variable TP_BOOTSTRAP. `local: true` marks a network whose relays all run on one host
(tests, the demo): path selection then skips the /16 diversity rule.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import NODE_ID_BYTES
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.directory import Trust

# The trust anchors of a fresh install: data in the bootstrap folder (bootstrap files and tools).
DEFAULT_BOOTSTRAP_FILE = Path(str(resources.files("bootstrap").joinpath("default.json")))
BOOTSTRAP_ENV = "TP_BOOTSTRAP"
PERIOD_S_MIN = 2
PERIOD_S_DEFAULT = 300


class BootstrapError(TokenPlaceError):
    """A bootstrap file is missing or invalid (the message names the file and the key)."""


@dataclass(frozen=True)
class BootstrapAuthority:
    node_id: bytes
    address: str

    def hop(self) -> HopInfo:
        """A first hop to this authority before any directory is known (identity-key handshake)."""
        return HopInfo(self.node_id, None, self.address)


@dataclass(frozen=True)
class Bootstrap:
    network: str
    threshold: int
    period_s: int
    authorities: tuple[BootstrapAuthority, ...]
    local: bool = False

    def entry(self, node_id: bytes) -> BootstrapAuthority | None:
        """The authority with this node id, if it is one."""
        return next((a for a in self.authorities if a.node_id == node_id), None)

    def trust(self) -> Trust:
        return Trust(self.network, frozenset(a.node_id for a in self.authorities), self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "threshold": self.threshold,
            "period_s": self.period_s,
            "local": self.local,
            "authorities": [{"node_id": a.node_id.hex(), "address": a.address} for a in self.authorities],
        }


def bootstrap_path(path: Path | None) -> Path:
    """The file to use: the one given, else $TP_BOOTSTRAP, else the default network's."""
    if path is not None:
        return path
    from_env = os.environ.get(BOOTSTRAP_ENV)
    return Path(from_env) if from_env else DEFAULT_BOOTSTRAP_FILE


def load_bootstrap(path: Path | None = None) -> Bootstrap:
    source = bootstrap_path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BootstrapError(f"bootstrap file {source} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BootstrapError(f"bootstrap file {source} cannot be read: {exc}") from exc
    return parse_bootstrap(data, str(source))


def parse_bootstrap(data: Any, source: str) -> Bootstrap:
    def fail(key: str, problem: str) -> BootstrapError:
        return BootstrapError(f"bootstrap file {source}: {key} {problem}")

    if not isinstance(data, dict):
        raise fail("the top level", "must be an object")
    network = data.get("network")
    if not isinstance(network, str) or not network:
        raise fail("'network'", "must be a non-empty string")
    authorities = tuple(
        _authority(item, index, fail) for index, item in enumerate(_list(data, "authorities", fail))
    )
    if not authorities:
        raise fail("'authorities'", "must list at least one authority")
    if len({a.node_id for a in authorities}) != len(authorities):
        raise fail("'authorities'", "lists a node id twice")
    threshold = data.get("threshold")
    if type(threshold) is not int or not 1 <= threshold <= len(authorities):
        raise fail("'threshold'", f"must be an integer in 1..{len(authorities)}, got {threshold!r}")
    period_s = data.get("period_s", PERIOD_S_DEFAULT)
    if type(period_s) is not int or period_s < PERIOD_S_MIN:
        raise fail("'period_s'", f"must be an integer >= {PERIOD_S_MIN}, got {period_s!r}")
    local = data.get("local", False)
    if type(local) is not bool:
        raise fail("'local'", "must be true or false")
    return Bootstrap(network, threshold, period_s, authorities, local)


def write_bootstrap(path: Path, bootstrap: Bootstrap) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(bootstrap.to_json(), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


def _list(data: dict[str, Any], key: str, fail: Any) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise fail(f"'{key}'", "must be a list")
    return value


def _authority(item: Any, index: int, fail: Any) -> BootstrapAuthority:
    where = f"'authorities'[{index}]"
    if not isinstance(item, dict):
        raise fail(where, "must be an object")
    try:
        node_id = bytes.fromhex(item.get("node_id", ""))
    except (TypeError, ValueError):
        node_id = b""
    if len(node_id) != NODE_ID_BYTES:
        raise fail(f"{where}.node_id", f"must be {NODE_ID_BYTES * 2} hex digits")
    address = item.get("address")
    if not isinstance(address, str) or not address.startswith("ws://"):
        raise fail(f"{where}.address", "must be a ws:// URL")
    return BootstrapAuthority(node_id, address)
