"""Container images (bootstrap/deploy/containers): the relay image is built with buildah from Debian's
packages and the project's wheels, started with podman and joined to a local network, where the directory
lists it and a circuit runs through it (slow: a build takes over 90 s, so `make slow`). Fast checks keep the
Containerfiles, build.sh, the pod file and the k3s manifest naming one set of images.

The slow test skips only where the tools cannot run, naming the missing piece; TP_REQUIRE_CONTAINERS=1 turns
that skip into a failure. .ci/run does not install podman and buildah for it: cold (apt, debootstrap, the
build, the run) it takes ~4.5 min, past what CI's budget leaves beside `make test`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.required import outcome_of, skip_unless_required
from tp_crypto.errors import TokenPlaceError
from tp_dev.local_network import LocalNetwork, local_network
from tp_dev.processes import STARTUP_TIMEOUT_S, STOP_TIMEOUT_S
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.directory_client import fetch_directory
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import FAKE_MODEL_ID

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "bootstrap" / "deploy"
CONTAINERS = DEPLOY / "containers"
BUILD_SCRIPT = CONTAINERS / "build.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
RELAY_IMAGE = f"localhost/tp-relay:{VERSION}"
NODE_CPU_IMAGE = f"localhost/tp-node-cpu:{VERSION}"
NODE_CUDA_IMAGE = f"localhost/tp-node:{VERSION}"
DEBIAN_IMAGE = "localhost/tp-debian:bookworm"
CUDA_BASE = "docker.io/nvidia/cuda:12.6.3-runtime-ubuntu24.04"
CUDA_BUILD = "docker.io/nvidia/cuda:12.6.3-devel-ubuntu24.04"
REQUIRE_ENV = "TP_REQUIRE_CONTAINERS"
# A cold build (debootstrap, then the image) took ~4 min here on 2 busy cores; a warm one ~1.5 min.
BUILD_TIMEOUT_S = 900
JOIN_TIMEOUT_S = 90.0
CONTAINER_BOOTSTRAP = "/etc/token.place/bootstrap.json"
# The PATH `podman kube play` gives a container that sets env (pod.yaml's relay), instead of the image's.
KUBE_PLAY_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Limits a container may set without CAP_SYS_RESOURCE (podman's rootful defaults are above the hard limits
# of a sandbox such as this one): lowering is always allowed.
ULIMITS = ("nofile=8192:8192", "nproc=4096:4096")


# --- Static checks (make test) ---------------------------------------------------------------------------


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (CONTAINERS / name).read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def arguments_of(found: list[tuple[str, str]], instruction: str) -> list[str]:
    return [arguments for name, arguments in found if name == instruction]


def assert_unprivileged_final_stage(found: list[tuple[str, str]]) -> None:
    users = arguments_of(found, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(index for index, (name, _) in enumerate(found) if name == "USER")
    assert all(name != "RUN" for name, _ in found[last_user:])
    last_from = max(index for index, (name, _) in enumerate(found) if name == "FROM")
    assert last_from < last_user


def test_the_relay_image_installs_no_node_extra_and_runs_unprivileged() -> None:
    found = instructions("relay.Containerfile")
    runs = " ".join(arguments_of(found, "RUN"))
    assert "token-place" in runs
    assert "[node]" not in runs and "llama" not in runs and "gguf" not in runs
    assert arguments_of(found, "FROM") == ["${BASE_IMAGE}"]
    assert ("ARG", "BASE_IMAGE=docker.io/library/debian:bookworm-slim") in found  # amd64 and arm64
    assert ("ARG", "PIP_FLAGS=--no-index") in found  # wheels from the wheelhouse only
    assert_unprivileged_final_stage(found)
    assert ("EXPOSE", "7000") in found
    assert "TP_RELAY_LISTEN=0.0.0.0:7000" in " ".join(arguments_of(found, "ENV"))
    assert ("ENTRYPOINT", '["tp-relay"]') in found


def test_the_node_image_defaults_to_cuda_and_builds_its_cpu_variant_from_the_same_file() -> None:
    found = instructions("node.Containerfile")
    assert ("ARG", f"BASE_IMAGE={CUDA_BASE}") in found
    assert ("ARG", f"BUILD_IMAGE={CUDA_BUILD}") in found
    assert ("ARG", "CMAKE_ARGS=-DGGML_CUDA=on") in found
    assert arguments_of(found, "FROM") == ["${BUILD_IMAGE} AS wheels", "${BASE_IMAGE}"]
    assert '"token-place[node]"' in " ".join(arguments_of(found, "RUN"))
    assert_unprivileged_final_stage(found)
    assert ("ENTRYPOINT", '["tp-node"]') in found
    script = BUILD_SCRIPT.read_text()
    cpu = script[script.index("    node-cpu)") : script.index("    node)")]
    assert '--build-arg BUILD_IMAGE="$DEBIAN_IMAGE" --build-arg BASE_IMAGE="$DEBIAN_IMAGE"' in cpu
    assert "GGML_CUDA" not in cpu  # the CPU variant never asks for CUDA


def test_build_sh_tags_the_images_this_test_and_the_manifests_name() -> None:
    script = BUILD_SCRIPT.read_text()
    for image in (RELAY_IMAGE, NODE_CPU_IMAGE, NODE_CUDA_IMAGE):
        assert f'"{image.replace(VERSION, "$version")}"' in script, image
    assert f"DEBIAN_IMAGE=${{DEBIAN_IMAGE:-{DEBIAN_IMAGE}}}" in script
    assert "debootstrap --variant=minbase" in script and "buildah from scratch" in script
    syntax = subprocess.run(["sh", "-n", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    assert os.access(BUILD_SCRIPT, os.X_OK)


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def images_of(pod_spec: dict[str, Any]) -> set[str]:
    containers = pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
    return {container["image"] for container in containers}


def test_the_k3s_manifest_runs_the_image_the_test_builds() -> None:
    (daemon_set,) = [d for d in yaml_documents(DEPLOY / "k3s-relays.yaml") if d["kind"] == "DaemonSet"]
    pod = daemon_set["spec"]["template"]["spec"]
    assert images_of(pod) == {RELAY_IMAGE}
    # Imported into the cluster (`k3s ctr images import`), never pulled from a registry that lacks it.
    assert {c["imagePullPolicy"] for c in pod["containers"] + pod["initContainers"]} == {"IfNotPresent"}


def test_the_pod_file_starts_a_relay_and_a_node_from_the_built_images() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    documents = yaml_documents(CONTAINERS / "pod.yaml")
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    (pod,) = [document for document in documents if document["kind"] == "Pod"]
    containers = {container["name"]: container for container in pod["spec"]["containers"]}
    assert set(containers) == {"relay", "node"}
    assert containers["relay"]["image"] == RELAY_IMAGE
    assert containers["node"]["image"] == NODE_CPU_IMAGE
    for container in containers.values():
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


# --- The image built and run (make slow) -----------------------------------------------------------------


def image_exists(podman: str, image: str) -> bool:
    found = subprocess.run([podman, "image", "exists", image], capture_output=True, timeout=60, check=False)
    return found.returncode == 0


def find_container_tools() -> dict[str, str]:
    """podman and buildah (and debootstrap while the Debian base image is missing), able to run: skip, or
    with TP_REQUIRE_CONTAINERS=1 fail, naming the missing piece."""
    tools = {}
    for tool, package in (("podman", "podman"), ("buildah", "buildah")):
        found = shutil.which(tool)
        if found is None:
            skip_unless_required(REQUIRE_ENV, f"{tool} is not installed (Debian package {package})")
        tools[tool] = found
    if os.geteuid() != 0:
        skip_unless_required(REQUIRE_ENV, "the image test needs root (rootful podman, debootstrap)")
    info = subprocess.run([tools["podman"], "info"], capture_output=True, text=True, timeout=120, check=False)
    if info.returncode != 0:
        skip_unless_required(REQUIRE_ENV, f"podman cannot run here: {info.stderr.strip()[:300]}")
    if not image_exists(tools["podman"], DEBIAN_IMAGE) and shutil.which("debootstrap") is None:
        missing = f"debootstrap is not installed (Debian package debootstrap) to make {DEBIAN_IMAGE}"
        skip_unless_required(REQUIRE_ENV, missing)
    # crun refuses hosts with cgroup v1 and v2 mounted at once; runc (Debian package runc) runs there.
    runc = shutil.which("runc")
    if runc is not None:
        tools["runtime"] = runc
    return tools


def test_missing_container_tools_skip_or_fail_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    kind, message = outcome_of(find_container_tools)
    assert kind == "skipped" and "podman is not installed (Debian package podman)" in message, message
    monkeypatch.setenv(REQUIRE_ENV, "1")
    kind, message = outcome_of(find_container_tools)
    assert kind == "failed" and f"{REQUIRE_ENV}=1 but podman is not installed" in message, message


@pytest.fixture(scope="module")
def relay_image() -> Iterator[dict[str, str]]:
    """The relay image, built now by build.sh (with this interpreter's pip for the wheels)."""
    tools = find_container_tools()
    started = time.monotonic()
    build = subprocess.run(
        [str(BUILD_SCRIPT), "relay"],
        env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"built {RELAY_IMAGE} in {time.monotonic() - started:.0f} s")
    yield tools


@asynccontextmanager
async def relay_container(
    tools: dict[str, str], name: str, bootstrap_file: Path
) -> AsyncIterator[dict[str, Any]]:
    """The relay image run with the host's network (127.0.0.1); yields its announcement line."""
    runtime = ["--runtime", tools["runtime"]] if "runtime" in tools else []
    command = [tools["podman"], *runtime, "run", "--rm", "--name", name, "--network", "host"]
    command += ["--no-healthcheck", *(f"--ulimit={limit}" for limit in ULIMITS), "--env", KUBE_PLAY_PATH]
    command += ["--volume", f"{bootstrap_file}:{CONTAINER_BOOTSTRAP}:ro", RELAY_IMAGE]
    command += ["--listen", "127.0.0.1:0", "--bootstrap", CONTAINER_BOOTSTRAP, "--log-level", "warning"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        output = bytearray()
        with trio.fail_after(STARTUP_TIMEOUT_S * 2):  # podman sets up the container first
            while b"\n" not in output:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"the relay container exited before announcing itself: {bytes(output)!r}"
                output += chunk
        yield json.loads(output.split(b"\n", 1)[0])
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)  # podman run passes it on to the relay
                with trio.move_on_after(STOP_TIMEOUT_S * 3):
                    await process.wait()
            if process.returncode is None:
                await trio.run_process([tools["podman"], "rm", "--force", name], check=False)
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def wait_until_listed(network: LocalNetwork, dialer: WebSocketDialer, relay_id: bytes) -> None:
    bootstrap = load_bootstrap(network.bootstrap_file)
    sources = [authority.hop() for authority in bootstrap.authorities]
    rng = random.Random(20)
    with trio.fail_after(JOIN_TIMEOUT_S):
        while True:
            try:
                directory, _ = await fetch_directory(dialer, sources, bootstrap.trust(), rng, time.time())
                if relay_id in directory.relays and directory.nodes_for(FAKE_MODEL_ID):
                    return
            except TokenPlaceError:
                pass
            await trio.sleep(1)


@pytest.mark.slow
async def test_the_relay_image_joins_a_local_network_and_carries_a_circuit(
    relay_image: dict[str, str], nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(tmp_path, relay_count=3, log_level="warning") as network:
        name = f"tp-relay-test-{os.getpid()}"
        async with relay_container(relay_image, name, network.bootstrap_file) as announcement:
            relay_id = bytes.fromhex(announcement["node_id"])
            dialer = WebSocketDialer(nursery)
            await wait_until_listed(network, dialer, relay_id)
            middle = HopInfo(relay_id, bytes.fromhex(announcement["onion_key"]), announcement["address"])
            hops = [network.relay_hop(0), middle, network.relay_hop(2), network.node_hop()]
            messages = [{"role": "user", "content": "hi"}]
            request = {"kind": "chat", "model": FAKE_MODEL_ID, "messages": messages}
            with trio.fail_after(JOIN_TIMEOUT_S):
                async with ClientLink.connect(dialer, hops[0]) as link:
                    circuit = await link.build_circuit(hops)
                    chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]
            assert chunks[-1]["finish_reason"] in ("length", "stop")
            assert "".join(chunk.get("text", "") for chunk in chunks[:-1])
            exec_id = [relay_image["podman"], "exec", name, "id", "-u"]
            user = await trio.run_process(exec_id, capture_stdout=True)
            assert user.stdout.strip() == b"10001"  # the image's unprivileged user
