"""`tp-node doctor`: can this machine serve, and will it use its GPU? Checks, each one line, read from the
same flags, environment and config file as tp-node itself:

- llama-cpp-python: whether it was built with GPU offload (`llama_supports_gpu_offload`), the backends it was
  built for, and when offload is missing the exact `CMAKE_ARGS` line that rebuilds it for CUDA, Metal, ROCm
  or Vulkan;
- device memory (nvidia-smi, where there is one; else the machine's available memory, for the CPU), and
  whether the model fits with the chosen `--n-ctx` and `--slots`;
- the network: a signed directory from the bootstrap file's authorities, and the home relays reachable;
- the identity and onion key files readable by their owner only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from tp_cli.config import ConfigError, resolve
from tp_cli.launch import IDENTITY_FILE
from tp_net.protocol.bootstrap_config import BootstrapError, load_bootstrap
from tp_net.protocol.directory import Directory
from tp_net.protocol.errors import TokenPlaceError
from tp_net.protocol.path_selection import LOCAL_NETWORK_RULES, STRICT_RULES, keep_and_top_up
from tp_net.trio.directory_client import fetch_directory
from tp_net.trio.link_trio import dial_link
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.gguf_header import ModelError
from tp_node.gpu_fit import memory_needed_bytes, model_shape
from tp_node.home_relays import HOME_RELAYS_WANTED
from tp_node.llama_engine import DEFAULT_N_CTX
from tp_node.models import resolve_model
from tp_node.onion_keys import ONION_KEY_FILE

EXIT_PROBLEMS = 1
NETWORK_CHECK_TIMEOUT_S = 10.0
NVIDIA_SMI_TIMEOUT_S = 10.0
PRIVATE_FILE_MODE_MASK = 0o077  # no bits for the group or others
CMAKE_ARGS = {
    "CUDA": "-DGGML_CUDA=on",
    "Metal": "-DGGML_METAL=on",
    "ROCm": "-DGGML_HIP=on",
    "Vulkan": "-DGGML_VULKAN=on",
}


@dataclass(frozen=True)
class Finding:
    ok: bool | None  # None: information, neither good nor bad
    text: str

    def line(self) -> str:
        mark = {True: "ok", False: "!!", None: "--"}[self.ok]
        return f"[{mark}] {self.text}"


# --- llama-cpp-python and the GPU ------------------------------------------------------------------


def built_backends(system_info: str) -> list[str]:
    """The ggml backends named in llama.cpp's system info ("CPU : SSE3 = 1 | ... | CUDA : ARCHS = ...")."""
    return re.findall(r"(?:^|\|)\s*([A-Za-z][A-Za-z0-9_]*) : ", system_info)


def rebuild_lines() -> list[str]:
    version = importlib.metadata.version("llama-cpp-python")
    return [
        f'{name}: CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir '
        f"--no-binary llama-cpp-python llama-cpp-python=={version}"
        for name, flag in CMAKE_ARGS.items()
    ]


def offload_findings(supports_offload: bool, system_info: str) -> list[Finding]:
    backends = ", ".join(built_backends(system_info)) or "unknown"
    if supports_offload:
        return [Finding(True, f"llama-cpp-python offloads to a GPU (built for: {backends})")]
    lines = "\n       ".join(rebuild_lines())
    return [
        Finding(
            False,
            f"llama-cpp-python was built without GPU offload (built for: {backends}): models run on the "
            f"CPU only. To use a GPU, rebuild it for yours:\n       {lines}",
        )
    ]


def gpu_memory_bytes(run: Callable[[list[str]], str] | None = None) -> list[tuple[str, int, int]]:
    """(name, total, free) of each NVIDIA GPU nvidia-smi sees; [] without nvidia-smi."""
    if run is None:
        if shutil.which("nvidia-smi") is None:
            return []
        run = _run
    query = "--query-gpu=name,memory.total,memory.free"
    try:
        output = run(["nvidia-smi", query, "--format=csv,noheader,nounits"])
    except (OSError, subprocess.SubprocessError):
        return []
    devices = []
    for line in output.strip().splitlines():
        name, total, free = (part.strip() for part in line.rsplit(",", 2))
        devices.append((name, int(total) * 2**20, int(free) * 2**20))
    return devices


def _run(command: list[str]) -> str:
    return subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=NVIDIA_SMI_TIMEOUT_S
    ).stdout


def available_memory_bytes() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, flags=re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def memory_findings(
    args: argparse.Namespace, offload: bool, devices: list[tuple[str, int, int]], available: int | None
) -> list[Finding]:
    findings = [
        Finding(None, f"GPU {name}: {_gb(total)} memory, {_gb(free)} free") for name, total, free in devices
    ]
    if offload and not devices:
        findings.append(Finding(None, "no NVIDIA GPU memory to report (nvidia-smi not found)"))
    if not args.model:
        return [*findings, Finding(None, "no --model given: nothing to fit")]
    try:
        path = resolve_model(args.model, args.cache_dir, pull_missing=False).path
    except ModelError as exc:
        return [*findings, Finding(None, f"{exc} (tp-node pulls a catalogue model at its first start)")]
    try:
        shape = model_shape(path)
    except (ModelError, OSError, KeyError, ValueError) as exc:
        return [*findings, Finding(False, f"model {path}: {exc}")]
    n_ctx = args.n_ctx or DEFAULT_N_CTX
    on_gpu = offload and bool(devices)
    needed = memory_needed_bytes(shape, n_ctx, args.slots, on_gpu=on_gpu)
    where = "GPU memory" if on_gpu else "memory (CPU)"
    room = max(free for _, _, free in devices) if on_gpu else available
    what = f"model {path.name} with --n-ctx {n_ctx} --slots {args.slots} needs about {_gb(needed)}"
    if room is None:
        return [*findings, Finding(None, f"{what}; free {where} unknown")]
    if needed <= room:
        return [*findings, Finding(True, f"{what}: fits in {_gb(room)} free {where}")]
    return [
        *findings,
        Finding(
            False,
            f"{what}: more than the {_gb(room)} free {where}; lower --n-ctx or --slots (the node retries "
            "with fewer GPU layers at start)",
        ),
    ]


def _gb(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


# --- files ------------------------------------------------------------------------------------------


def key_findings(data_dir: Path) -> list[Finding]:
    findings = []
    for path in (data_dir, data_dir / IDENTITY_FILE, data_dir / ONION_KEY_FILE):
        if not path.exists():
            findings.append(Finding(None, f"{path} does not exist yet (created at the first start)"))
            continue
        mode = path.stat().st_mode & 0o777
        if mode & PRIVATE_FILE_MODE_MASK:
            private = "700" if path.is_dir() else "600"
            findings.append(Finding(False, f"{path} has mode {mode:04o}: run `chmod {private} {path}`"))
        else:
            findings.append(Finding(True, f"{path} has mode {mode:04o} (its owner's only)"))
    return findings


# --- the network ------------------------------------------------------------------------------------


async def network_findings(args: argparse.Namespace) -> list[Finding]:
    try:
        bootstrap = load_bootstrap(args.bootstrap)
    except BootstrapError as exc:
        return [Finding(False, str(exc))]
    findings: list[Finding] = []
    directory: Directory | None = None
    async with trio.open_nursery() as nursery:
        dialer = WebSocketDialer(nursery)
        sources = [authority.hop() for authority in bootstrap.authorities]
        rng = random.Random()
        with trio.move_on_after(NETWORK_CHECK_TIMEOUT_S):
            try:
                directory, _ = await fetch_directory(dialer, sources, bootstrap.trust(), rng, time.time())
            except TokenPlaceError as exc:
                findings.append(Finding(False, f"no signed directory from the bootstrap authorities: {exc}"))
            else:
                findings.append(
                    Finding(
                        True,
                        f"network {bootstrap.network!r}: a signed directory, {len(directory.relays)} relays",
                    )
                )
        if not findings:
            findings.append(Finding(False, f"no directory within {NETWORK_CHECK_TIMEOUT_S:.0f} s"))
        if args.home_relay:
            homes = [(relay.node_id, relay.address) for relay in args.home_relay]
        elif directory is not None:
            rules = LOCAL_NETWORK_RULES if bootstrap.local else STRICT_RULES
            chosen = keep_and_top_up(
                [],
                list(directory.relays.values()),
                rng,
                count=HOME_RELAYS_WANTED,
                rules=rules,
                weights=directory.weights,
            )
            homes = [(node_id, directory.relays[node_id].address) for node_id in chosen]
        else:
            homes = []
        for node_id, address in homes:
            findings.append(await _reachable(dialer, node_id, address))
        nursery.cancel_scope.cancel()
    return findings


async def _reachable(dialer: WebSocketDialer, node_id: bytes, address: str) -> Finding:
    with trio.move_on_after(NETWORK_CHECK_TIMEOUT_S):
        try:
            link = await dial_link(dialer, address, expected_peer_id=node_id)
        except TokenPlaceError as exc:
            return Finding(False, f"home relay {address} unreachable: {exc}")
        await link.aclose()
        return Finding(True, f"home relay {address} reachable")
    return Finding(False, f"home relay {address}: no answer within {NETWORK_CHECK_TIMEOUT_S:.0f} s")


# --- the command ------------------------------------------------------------------------------------


def doctor_main(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]) -> int:
    parser = build_parser()
    parser.prog = "tp-node doctor"
    parser.description = "Check what this machine needs to serve a model, and whether it uses its GPU."
    try:
        args = resolve(parser, "node", argv, check_required=False)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        import llama_cpp
    except ImportError as exc:
        print(f"[!!] llama-cpp-python is not installed (pip install 'token-place[node]'): {exc}")
        return EXIT_PROBLEMS
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    system_info = llama_cpp.llama_print_system_info().decode(errors="replace")
    findings = offload_findings(offload, system_info)
    findings += memory_findings(args, offload, gpu_memory_bytes(), available_memory_bytes())
    findings += trio.run(network_findings, args)
    findings += key_findings(args.data_dir)
    for finding in findings:
        print(finding.line())
    sys.stdout.flush()
    return EXIT_PROBLEMS if any(finding.ok is False for finding in findings) else 0
