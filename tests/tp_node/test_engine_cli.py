"""tp-node's engine flags: bad values are named, the llama engine opens with what the flags say."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tp_node import node_cli
from tp_node.engine_cli import add_engine_arguments, open_engine
from tp_node.testing.tiny_projector import write_tiny_projector

RELAY = "ab" * 32 + "@ws://127.0.0.1:1/"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--slots", "0"], "--slots: '0' is not an integer in 1..64"),
        (["--queue", "-1"], "--queue: '-1' is not an integer in 0..10000"),
        (["--n-gpu-layers", "-2"], "--n-gpu-layers: '-2' is not an integer in -1..100000"),
        (["--n-ctx", "many"], "--n-ctx: 'many' is not an integer in 64..4194304"),
        (["--engine", "vllm"], "invalid choice: 'vllm'"),
    ],
)
def test_bad_flag_values_are_named(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        node_cli.main(["--home-relay", RELAY, *flags])
    assert message in capsys.readouterr().err


def test_unusable_models_stop_the_node_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"PK\x03\x04 not a model")
    cases = [
        ([], "give --model ID_OR_FILE"),
        (["--model", str(tmp_path / "gone.gguf")], "does not exist"),
        (["--model", str(not_gguf)], "is not a GGUF file"),
    ]
    for flags, message in cases:
        argv = ["--home-relay", RELAY, "--data-dir", str(tmp_path / "node"), "--engine", "llama", *flags]
        assert node_cli.main(argv) == 1
        assert message in capsys.readouterr().err


async def test_the_llama_engine_opens_with_the_flags(tiny_model_path: Path) -> None:
    flags = ["--engine", "llama", "--model", str(tiny_model_path), "--model-id", "tiny", "--slots", "3"]
    async with open_engine(parse(*flags, "--queue", "5", "--n-ctx", "256", "--n-gpu-layers", "0")) as engine:
        (info,) = engine.models()
    assert (info.model_id, info.max_concurrent, info.queue_limit, info.context_length) == ("tiny", 3, 5, 256)


async def test_a_model_alone_means_the_llama_engine(tiny_model_path: Path) -> None:
    async with open_engine(parse("--model", str(tiny_model_path), "--n-ctx", "256")) as engine:
        (info,) = engine.models()
    assert info.model_id == tiny_model_path.name.removesuffix(".gguf")  # llama: the fake would say "fake"


def test_without_a_model_nothing_is_served_unless_the_fake_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert node_cli.main(["--home-relay", RELAY, "--data-dir", str(tmp_path / "node")]) == 1
    assert "give --model ID_OR_FILE" in capsys.readouterr().err


async def test_the_fake_engine_says_so_at_start_and_in_its_descriptor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_engine(parse("--engine", "fake")) as engine:
        (info,) = engine.models()
    assert info.model_id == "fake"
    assert "--engine fake: serving model 'fake', made-up words" in caplog.text


def test_models_is_a_subcommand(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert node_cli.main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "qwen2.5-0.5b-instruct-q4_k_m" in capsys.readouterr().out


async def test_mmproj_makes_the_model_a_vision_model(tiny_model_path: Path, tmp_path: Path) -> None:
    projector = write_tiny_projector(tmp_path / "mmproj.gguf")
    model = ["--model", str(tiny_model_path), "--n-ctx", "256"]
    for flags, vision in (
        (model, False),
        ([*model, "--mmproj", str(projector)], True),
        (["--engine", "fake", "--mmproj", str(projector)], True),
        (["--engine", "fake"], False),
    ):
        async with open_engine(parse(*flags)) as engine:
            (info,) = engine.models()
        assert info.vision is vision, flags


def test_a_missing_projector_stops_the_node_with_one_line(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--home-relay", RELAY, "--data-dir", str(tmp_path / "node"), "--model", str(tiny_model_path)]
    assert node_cli.main([*argv, "--mmproj", str(tmp_path / "gone.gguf")]) == 1
    assert "no projector file" in capsys.readouterr().err
