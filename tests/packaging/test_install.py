"""The distribution as it installs: the project built and installed into a fresh virtual environment, without
the network, has every console script working, its package data, and no node-only dependency in a relay
install.

The new environment borrows the dev environment's packages (the dependencies, pip and the build backend,
setuptools, from the `dev` extra) through a .pth file, so nothing is downloaded: `pip install --no-deps
--no-build-isolation --no-index` of a copy of the source tree (an in-tree build would leave build/ and
*.egg-info behind in the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["tp-relay", "tp-node", "tp-gateway", "tp-chat", "tp-demo", "tp-sim"]
NODE_ONLY = ("llama-cpp-python", "gguf")
PACKAGE_DATA = ("tp_net/catalogue.json", "bootstrap/default.json", "tp_net/py.typed")
SOURCE_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "tests", "benchmarks", "docs"
)
INSTALL_TIMEOUT_S = 300
SETUPTOOLS_MIN = 77  # PEP 639 license strings (pyproject.toml)


class Installed:
    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.bin = venv / "bin"
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # From the venv's own folder: the checkout is not on the path, only the installed copy.
        return subprocess.run(
            args, cwd=self.venv, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )

    def python(self, code: str) -> str:
        result = self.run(str(self.bin / "python"), "-c", code)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    where = tmp_path_factory.mktemp("install")
    source = where / "source"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORED)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    borrowed = [p for p in sys.path if p and Path(p).is_dir() and not (Path(p) / "tp_node").exists()]
    (site / "dev-environment.pth").write_text("\n".join(borrowed) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    backend = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import setuptools; print(setuptools.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert int(backend.split(".")[0]) >= SETUPTOOLS_MIN, (
        f"setuptools {backend} cannot build this pyproject: reinstall the dev environment (make, which runs "
        f"pip install -e '.[node,dev]'; the dev extra asks for setuptools>={SETUPTOOLS_MIN})"
    )
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--ignore-installed", "--quiet", str(source)]
    result = subprocess.run(
        command, cwd=where, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Installed(venv)


def test_the_packages_come_from_the_install_with_their_data(installed: Installed) -> None:
    location = Path(installed.python("import tp_node; print(tp_node.__file__)"))
    assert location.is_relative_to(installed.venv), location
    packages = location.parent.parent
    for name in PACKAGE_DATA:
        assert (packages / name).is_file(), name
    assert list((packages / "tp_gateway" / "static").iterdir())  # the chat page


def test_a_relay_install_has_no_node_only_dependencies(installed: Installed) -> None:
    code = "import importlib.metadata as m; print('\\n'.join(m.requires('token-place')))"
    requirements = installed.python(code).lower().splitlines()
    base = [r for r in requirements if "extra ==" not in r]
    node = [r for r in requirements if 'extra == "node"' in r]
    assert base and not any(name in r for r in base for name in NODE_ONLY), base
    assert all(any(name in r for r in node) for name in NODE_ONLY), node


def test_every_console_script_is_installed(installed: Installed) -> None:
    code = "import importlib.metadata as m; print(' '.join(sorted({e.name for e in m.entry_points(group='console_scripts') if e.dist.name == 'token-place'})))"  # noqa: E501
    assert installed.python(code).split() == sorted(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_console_script_help_exits_zero(installed: Installed, name: str) -> None:
    result = installed.run(str(installed.bin / name), "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: {name}" in result.stdout


def test_relay_modules_import_without_llama(installed: Installed) -> None:
    """Importing the relay-side packages must not import llama_cpp, gguf or numpy."""
    code = (
        "import sys, tp_crypto.noise, tp_net.trio.link_trio, tp_net.trio.transport_ws;"
        "import tp_node.relay_cli, tp_gateway.cli;"
        "print([m for m in ('llama_cpp', 'gguf', 'numpy') if m in sys.modules])"
    )
    assert installed.python(code) == "[]"
