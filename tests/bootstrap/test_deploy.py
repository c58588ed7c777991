"""Deployment files: systemd units pass `systemd-analyze verify` and stay hardened, the k3s manifest passes
the Kubernetes schema (offline). The container images: tests/deploy/test_containers.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.required import outcome_of, skip_unless_required
from tp_cli.config import resolve
from tp_node import relay_cli

DEPLOY = Path(__file__).resolve().parents[2] / "bootstrap" / "deploy"
INSTALLED_BIN = "/opt/token.place/bin/"
# CI (.ci/run) installs systemd and sets it to 1: then a missing systemd-analyze fails instead of skipping.
REQUIRE_ENV = "TP_REQUIRE_SYSTEMD"
HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "RestrictNamespaces": "yes",
    "UMask": "0077",
}
EXPOSURE_MAX = {"tp-relay.service": 1.5, "tp-node.service": 2.5}
UNITS = sorted(EXPOSURE_MAX)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def rendered(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's script, as an install under /opt would have it."""
    text = (DEPLOY / unit).read_text().replace(INSTALLED_BIN, str(Path(sys.executable).parent) + "/")
    path = tmp_path / unit
    path.write_text(text)
    return path


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(unit: str) -> None:
    settings = unit_settings((DEPLOY / unit).read_text())
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], key
    role = unit.removesuffix(".service")
    assert settings["StateDirectory"] == [role]
    assert settings["ExecStart"][0].startswith(f"{INSTALLED_BIN}{role} --config ${{CREDENTIALS_DIRECTORY}}/")
    assert settings["LoadCredential"][0].startswith(f"{role.removeprefix('tp-')}.toml:/etc/token.place/")


def find_systemd_analyze() -> str:
    """The systemd-analyze command; skip (or, with TP_REQUIRE_SYSTEMD=1, fail) when it is missing."""
    found = shutil.which("systemd-analyze")
    if found is None:
        skip_unless_required(REQUIRE_ENV, "systemd-analyze is not installed (Debian package systemd)")
    return found


@pytest.fixture
def systemd_analyze() -> str:
    return find_systemd_analyze()


def test_a_missing_systemd_analyze_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    kind, message = outcome_of(find_systemd_analyze)
    assert kind == "skipped" and "systemd-analyze is not installed" in message, message
    monkeypatch.setenv(REQUIRE_ENV, "1")
    kind, message = outcome_of(find_systemd_analyze)
    assert kind == "failed" and f"{REQUIRE_ENV}=1 but systemd-analyze" in message, message


@pytest.mark.parametrize("unit", UNITS)
def test_units_pass_systemd_analyze(unit: str, tmp_path: Path, systemd_analyze: str) -> None:
    path = rendered(unit, tmp_path)
    verify = subprocess.run(
        [systemd_analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == ""  # unknown keys are only warnings: none may appear
    security = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout + security.stderr)
    assert match, security.stdout + security.stderr
    assert float(match.group(1)) <= EXPOSURE_MAX[unit]


def test_verify_does_catch_a_missing_executable(tmp_path: Path, systemd_analyze: str) -> None:
    """The check above can fail: a unit whose ExecStart does not exist is refused."""
    path = tmp_path / "tp-relay.service"
    path.write_text((DEPLOY / "tp-relay.service").read_text())  # /opt/token.place does not exist here
    verify = subprocess.run(
        [systemd_analyze, "verify", str(path)], capture_output=True, timeout=60, check=False
    )
    assert verify.returncode != 0


def manifest() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return [document for document in yaml.safe_load_all((DEPLOY / "k3s-relays.yaml").read_text()) if document]


def test_the_k3s_manifest_passes_the_kubernetes_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    documents = manifest()
    assert [document["kind"] for document in documents] == ["Namespace", "ConfigMap", "DaemonSet"]
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    broken = documents[2] | {"spec": documents[2]["spec"] | {"replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_k3s_relays_run_on_arm64_unprivileged_with_a_valid_config(tmp_path: Path) -> None:
    _, config_map, daemon_set = manifest()
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    (relay,) = pod["containers"]
    assert relay["securityContext"]["runAsNonRoot"] is True
    assert relay["securityContext"]["allowPrivilegeEscalation"] is False
    assert relay["securityContext"]["capabilities"]["drop"] == ["ALL"]
    config = tmp_path / "relay.toml"
    config.write_text(config_map["data"]["relay.toml"])
    tomllib.loads(config.read_text())
    args = resolve(relay_cli.build_parser(), "relay", ["--config", str(config)], environ={})
    assert args.listen == ("0.0.0.0", 7000)
    assert args.metrics == ("127.0.0.1", 9100)  # metrics stay on the Pi's loopback
