"""The JS sealed client (js/, bundled as tp_gateway/static/sealed.bundle.js) under Node: the RFC 9180
vector through @hpke, and the same sealed bytes as tp_net.protocol.sealed for
tests/tp_net/vectors/sealed.json."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node is not installed")
def test_the_js_client_makes_the_same_bytes_as_python() -> None:
    assert NODE is not None
    run = subprocess.run(
        [NODE, "--test", "test/"], cwd=ROOT / "js", capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "# fail 0" in run.stdout
