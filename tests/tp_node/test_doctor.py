"""`tp-node doctor` and the GPU memory guardrail: offload reported as it is (with the rebuild lines when it is
missing), device memory and model fit, key file modes, and a load that does not fit retried with fewer
GPU layers."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import llama_cpp
import pytest

from tp_node import node_cli
from tp_node.doctor import (
    built_backends,
    gpu_memory_bytes,
    key_findings,
    memory_findings,
    offload_findings,
)
from tp_node.gguf_header import ModelError
from tp_node.gpu_fit import memory_needed_bytes, model_shape, with_fewer_layers
from tp_node.models import default_cache_dir

CPU_INFO = "CPU : SSE3 = 1 | AVX2 = 1 | LLAMAFILE = 1 | "
CUDA_INFO = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 | "


def test_missing_offload_is_said_with_the_exact_rebuild_lines() -> None:
    (finding,) = offload_findings(False, CPU_INFO)
    assert finding.ok is False and "built without GPU offload (built for: CPU)" in finding.text
    version = re.escape(llama_cpp.__version__)
    for backend, flag in [("CUDA", "CUDA"), ("Metal", "METAL"), ("ROCm", "HIP"), ("Vulkan", "VULKAN")]:
        assert re.search(
            rf'{backend}: CMAKE_ARGS="-DGGML_{flag}=on" pip install --force-reinstall --no-cache-dir '
            rf"--no-binary llama-cpp-python llama-cpp-python=={version}",
            finding.text,
        )
    (good,) = offload_findings(True, CUDA_INFO)
    assert good.ok is True and "CUDA, CPU" in good.text
    assert built_backends(CUDA_INFO) == ["CUDA", "CPU"]


def test_gpu_memory_comes_from_nvidia_smi() -> None:
    output = "NVIDIA H200, 143771, 140000\nNVIDIA L4, 23034, 100\n"
    devices = gpu_memory_bytes(lambda command: output)
    assert devices == [
        ("NVIDIA H200", 143771 * 2**20, 140000 * 2**20),
        ("NVIDIA L4", 23034 * 2**20, 100 * 2**20),
    ]


def model_args(model: Path, n_ctx: int = 2048, slots: int = 2) -> argparse.Namespace:
    return argparse.Namespace(model=str(model), cache_dir=default_cache_dir(), n_ctx=n_ctx, slots=slots)


def test_the_model_fit_follows_n_ctx_and_slots(tiny_model_path: Path) -> None:
    shape = model_shape(tiny_model_path)
    assert (shape.layers, shape.kv_heads, shape.head_dim) == (2, 2, 16)
    # keys and values, 2 layers, 2 KV heads of 16, f16: 256 bytes a token
    assert memory_needed_bytes(shape, 1000, 3, on_gpu=False) == shape.file_bytes + 3 * 1000 * 256
    assert memory_needed_bytes(shape, 1000, 3, on_gpu=True) == 3 * (shape.file_bytes + 1000 * 256)
    needed = memory_needed_bytes(shape, 2048, 2, on_gpu=True)
    gpu = [("GPU", 10 * needed, needed)]
    fits = memory_findings(model_args(tiny_model_path), True, gpu, None)
    assert fits[-1].ok is True and "fits in" in fits[-1].text and "free GPU memory" in fits[-1].text
    tight = memory_findings(model_args(tiny_model_path, slots=3), True, gpu, None)
    assert tight[-1].ok is False and "lower --n-ctx or --slots" in tight[-1].text
    cpu = memory_findings(model_args(tiny_model_path), False, [], available=needed)
    assert cpu[-1].ok is True and "memory (CPU)" in cpu[-1].text


def test_key_files_readable_by_others_are_named(tmp_path: Path) -> None:
    (tmp_path / "identity.key").write_bytes(b"k")
    (tmp_path / "identity.key").chmod(0o644)
    (tmp_path / "onion_keys.json").write_bytes(b"{}")
    (tmp_path / "onion_keys.json").chmod(0o600)
    tmp_path.chmod(0o755)
    folder, identity, onion = key_findings(tmp_path)
    assert folder.ok is False and "mode 0755: run `chmod 700" in folder.text
    assert identity.ok is False and "mode 0644: run `chmod 600" in identity.text
    assert onion.ok is True


def test_doctor_reports_this_machine_honestly(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text("{}")
    argv = ["doctor", "--data-dir", str(tmp_path / "node"), "--model", str(tiny_model_path)]
    assert node_cli.main([*argv, "--bootstrap", str(bootstrap)]) == 1
    out = capsys.readouterr().out
    if llama_cpp.llama_supports_gpu_offload():
        assert "[ok] llama-cpp-python offloads to a GPU" in out
    else:  # this machine's build: CPU only, and said so
        assert "[!!] llama-cpp-python was built without GPU offload" in out
        assert "fits in" in out and "free memory (CPU)" in out
    assert "[!!] bootstrap file" in out


def test_a_model_too_big_for_the_gpu_is_retried_with_fewer_layers(caplog: pytest.LogCaptureFixture) -> None:
    tried: list[int] = []

    def load(layers: int) -> str:
        tried.append(layers)
        if layers == -1 or layers > 8:
            raise ModelError("llama.cpp could not load m.gguf: out of memory")
        return f"loaded with {layers}"

    with caplog.at_level(logging.WARNING):
        assert with_fewer_layers(load, -1, 40) == ("loaded with 5", 5)
    assert tried == [-1, 20, 10, 5]
    assert "retrying with 20 of 40" in caplog.text and "loaded with 5 of 40 layers on the GPU" in caplog.text
    assert with_fewer_layers(load, 6, 40) == ("loaded with 6", 6)  # fits as asked: no retry


def test_a_model_that_fails_even_on_the_cpu_fails() -> None:
    def load(layers: int) -> str:
        raise ModelError("not a model")

    with pytest.raises(ModelError, match="not a model"):
        with_fewer_layers(load, -1, 4)
