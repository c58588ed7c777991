"""`tp-node models`: pull GGUF files into the cache (through huggingface_hub, verified by sha256), write the
tiny test model, list the catalogue."""

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
    PulledModel,
    announce_first_use,
    check_sha256,
    default_cache_dir,
    load_catalogue,
    parse_hub_url,
    pull,
    resolve_model,
    store_model,
    trusted_sha256,
)


def _pull(args: argparse.Namespace) -> PulledModel:
    pinned = check_sha256(args.sha256) if args.sha256 else None
    entry = load_catalogue().get(args.source)
    if entry is not None:
        hub, endpoint, pinned = entry.hub, None, pinned or entry.sha256
    elif "://" in args.source:
        endpoint, hub = parse_hub_url(args.source)
    else:
        raise ModelError(
            f"{args.source!r} is neither a Hub file URL nor a catalogue id (`tp-node models list`)"
        )
    pulled = pull(hub, pinned, args.cache_dir, endpoint=endpoint)
    announce_first_use(pulled, hub)
    return pulled


def _tiny(args: argparse.Namespace) -> None:
    try:
        from tp_node.testing.tiny_model import write_tiny_model
    except ImportError as exc:  # gguf and numpy come with the node extra
        raise ModelError(f"the tiny model needs the node extra (pip install '.[node]'): {exc}") from exc
    path, sha256 = store_model(args.cache_dir, TINY_MODEL_FILE_NAME, write_tiny_model)
    print(f"wrote {path}\nsha256 {sha256}\nserve it with: tp-node --model {TINY_MODEL_ID} ...")


def _list(args: argparse.Namespace) -> None:
    for entry in load_catalogue().values():
        try:
            cached = resolve_model(entry.model_id, args.cache_dir, pull_missing=False).path
            state = f"cached at {cached}"
        except ModelError:
            state = "not pulled"
        if entry.sha256:
            pinned = "sha256 pinned"
        elif recorded := trusted_sha256(args.cache_dir, entry.hub):
            pinned = f"sha256 {recorded} recorded at first pull (not pinned)"
        else:
            pinned = "sha256 not pinned: the first pull records it"
        print(
            f"{entry.model_id}: {entry.parameters} {entry.quantisation}, {entry.license}; "
            f"{entry.hub.key}; {pinned}; {state}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="(default: %(default)s)")
    parser = argparse.ArgumentParser(
        prog="tp-node models",
        description="Manage GGUF models for tp-node (downloads through huggingface_hub; HF_ENDPOINT names a "
        "mirror).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pull_parser = commands.add_parser(
        "pull", parents=[common], help="download a model into the cache and verify its sha256"
    )
    pull_parser.add_argument(
        "source",
        metavar="URL_OR_ID",
        help="a catalogue id, or a Hub file URL (https://huggingface.co/OWNER/REPO/resolve/REVISION/FILE)",
    )
    pull_parser.add_argument(
        "--sha256", metavar="HEX", help="the file's sha256 (without it: recorded at the first pull)"
    )
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
            print(_pull(args).path)
        elif args.command == "tiny":
            _tiny(args)
        else:
            _list(args)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
