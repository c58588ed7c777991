"""`tp-node models`: pull GGUF files into the cache (verified by sha256), write the tiny test model, list."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tp_cli.common import EXIT_FAILURE
from tp_node.gguf_header import ModelError
from tp_node.models import (
    TINY_MODEL_FILE_NAME,
    TINY_MODEL_ID,
    ProgressBar,
    default_cache_dir,
    file_name_of,
    load_catalogue,
    pull,
    store_model,
)


def _pull(args: argparse.Namespace) -> Path:
    url, sha256 = args.source, args.sha256
    entry = load_catalogue().get(args.source)
    if entry is not None:
        url, sha256 = entry.url, sha256 or entry.sha256
    elif "://" not in args.source:
        raise ModelError(f"{args.source!r} is neither a URL nor a catalogue id (see `tp-node models list`)")
    if not sha256:
        raise ModelError(
            f"{args.source}: no sha256 to verify against; pass --sha256 HEX from the publisher's file page"
        )
    bar = ProgressBar(sys.stderr, file_name_of(url))
    try:
        return pull(url, sha256, args.cache_dir, progress=bar)
    finally:
        bar.close()


def _tiny(args: argparse.Namespace) -> None:
    try:
        from tp_node.testing.tiny_model import write_tiny_model
    except ImportError as exc:  # gguf and numpy come with the node extra
        raise ModelError(f"the tiny model needs the node extra (pip install '.[node]'): {exc}") from exc
    path, sha256 = store_model(args.cache_dir, TINY_MODEL_FILE_NAME, write_tiny_model)
    print(f"wrote {path}\nsha256 {sha256}\nserve it with: tp-node --engine llama --model {TINY_MODEL_ID} ...")


def _list(args: argparse.Namespace) -> None:
    for entry in load_catalogue().values():
        cached = sorted(args.cache_dir.glob(f"*/{entry.file_name}"))
        state = f"cached at {cached[0]}" if cached else "not pulled"
        pinned = "" if entry.sha256 else " (sha256 not pinned: pull needs --sha256)"
        print(f"{entry.model_id}: {entry.parameters} {entry.quantisation}, {entry.license}; {state}{pinned}")


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="(default: %(default)s)")
    parser = argparse.ArgumentParser(prog="tp-node models", description="Manage GGUF models for tp-node.")
    commands = parser.add_subparsers(dest="command", required=True)
    pull_parser = commands.add_parser(
        "pull", parents=[common], help="download a model into the cache and verify its sha256"
    )
    pull_parser.add_argument(
        "source", metavar="URL_OR_ID", help="an http(s) URL of a GGUF file, or a catalogue id"
    )
    pull_parser.add_argument("--sha256", metavar="HEX", help="the file's sha256 (required for a URL)")
    commands.add_parser("list", parents=[common], help="the catalogue and what is in the cache")
    commands.add_parser(
        "tiny",
        parents=[common],
        help=f"write the tiny random-weight test model into the cache (no network; serve it with "
        f"--model {TINY_MODEL_ID}; it answers gibberish)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "pull":
            print(_pull(args))
        elif args.command == "tiny":
            _tiny(args)
        else:
            _list(args)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
