"""The distribution's shape: console scripts exist, and a relay install never pulls llama-cpp-python."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["tp-relay", "tp-node", "tp-gateway", "tp-demo", "tp-sim"]
NODE_ONLY = ("llama-cpp-python", "gguf")


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def script_path(name: str) -> Path:
    return Path(sys.executable).parent / name


def test_base_install_has_no_node_only_dependencies() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    base = " ".join(project["dependencies"]).lower()
    assert not any(name in base for name in NODE_ONLY)
    node_extra = " ".join(project["optional-dependencies"]["node"]).lower()
    assert all(name in node_extra for name in NODE_ONLY)


def test_every_console_script_is_declared() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert sorted(project["scripts"]) == sorted(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_console_script_help_exits_zero(name: str) -> None:
    result = subprocess.run(
        [str(script_path(name)), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"usage: {name}" in result.stdout


def test_relay_modules_import_without_llama() -> None:
    """Importing the relay-side packages must not import llama_cpp, gguf or numpy."""
    code = (
        "import sys, tp_crypto.noise, tp_net.link_trio, tp_net.transport_ws;"
        "import tp_node.relay_cli, tp_gateway.cli;"
        "bad = [m for m in ('llama_cpp', 'gguf', 'numpy') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
