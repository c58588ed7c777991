"""One home for each thing: every named limit is defined once, and the packages import only downward
(the gateway never imports the node's package; product code never imports the bootstrap data folder; the
simulator assembles roles as the commands do, never through a command's module)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The code a named limit may live in once: the product packages, the simulator and the benchmarks (tests keep
# their own waits and timeouts).
PRODUCT = ("tp_crypto", "tp_net", "tp_node", "tp_gateway", "tp_cli")
SCANNED = (*PRODUCT, "tp_dev", "bootstrap", "simulations", "benchmarks")
LIMIT = re.compile(r"^([A-Z_]+_(?:MAX|MIN|BYTES|S|COUNT|LIMIT))\b\s*[:=]", re.MULTILINE)


def _sources(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def _importers(packages: tuple[str, ...], prefix: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _sources(*packages):
        hits = {m for m in _imported_modules(path) if m == prefix or m.startswith(prefix + ".")}
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def test_each_named_limit_is_defined_once() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for path in _sources(*SCANNED):
        for match in LIMIT.finditer(path.read_text()):
            homes[match.group(1)].append(str(path.relative_to(ROOT)))
    assert len(homes) > 100  # the scan sees the tree's limits
    assert {name: files for name, files in homes.items() if len(files) > 1} == {}


def test_each_constant_of_the_product_is_defined_once() -> None:
    constant = re.compile(r"^([A-Z][A-Z0-9_]+)\s*(?::[^=]+)?=", re.MULTILINE)
    homes: dict[str, list[str]] = defaultdict(list)
    for path in _sources(*PRODUCT, "tp_dev", "simulations"):
        for match in constant.finditer(path.read_text()):
            homes[match.group(1)].append(str(path.relative_to(ROOT)))
    assert {name: files for name, files in homes.items() if len(files) > 1} == {}


def test_the_inference_contract_has_one_home() -> None:
    from tp_net.protocol import inference_contract

    for name in ("INFERENCE_SERVICE", "MESSAGES_MAX", "STOP_SEQUENCES_MAX", "CHOICES_MAX", "TOOLS_MAX"):
        assert hasattr(inference_contract, name)
    gateway_imports = _importers(("tp_gateway",), "tp_net.protocol.inference_contract")
    assert {"tp_gateway/openai_requests.py", "tp_gateway/openai_chat_fields.py"} <= set(gateway_imports)


def test_the_gateway_does_not_import_the_node_package() -> None:
    # directory_duties (the directory refresh schedule) waits for the restructuring of the overlay (issue 17).
    allowed = {"tp_node.directory_duties"}
    imports = _importers(("tp_gateway",), "tp_node")
    assert {path: hits - allowed for path, hits in imports.items() if hits - allowed} == {}


def test_the_simulator_imports_no_command_module() -> None:
    imports = {
        path: {m for m in hits if m.endswith("_cli") or m.endswith(".cli")}
        for path, hits in _importers(("simulations",), "tp_node").items()
    }
    assert {path: hits for path, hits in imports.items() if hits} == {}
    assert "tp_node.roles" in _imported_modules(ROOT / "simulations" / "world.py")


def test_product_code_does_not_import_the_bootstrap_folder() -> None:
    assert _importers((*PRODUCT, "simulations"), "bootstrap") == {}


def test_the_command_plumbing_imports_no_role() -> None:
    assert _importers(("tp_cli",), "tp_node") == {}
    assert _importers(("tp_cli",), "tp_gateway") == {}


def test_dev_tooling_lives_outside_the_product_packages() -> None:
    assert _importers(PRODUCT, "tp_dev") == {}
    assert _importers(PRODUCT, "benchmarks") == {}
    gone = ("tp_node/demo.py", "tp_node/local_network.py", "tp_node/processes.py", "tp_net/trio/linkbench.py")
    for path in gone:
        assert not (ROOT / path).exists(), path
