"""tp-node's engine flags, and opening the engine they describe (fake or llama, optionally moderated)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tp_cli.common import int_in
from tp_node.engine import FakeEngine, ServingEngine
from tp_node.gguf_header import ModelError
from tp_node.models import default_cache_dir, resolve_model
from tp_node.moderation import Blocklist, ModeratedEngine, Moderator, PluginModerator


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference engine")
    group.add_argument("--engine", choices=["fake", "llama"], default="fake", help="(default: fake)")
    group.add_argument(
        "--fake-token-delay-ms", type=float, default=0.0, help="fake engine: delay before each token"
    )
    group.add_argument(
        "--model", help="llama: a GGUF file, or a catalogue id pulled with `tp-node models pull`"
    )
    group.add_argument("--model-id", help="the id requests name (default: the file name without .gguf)")
    group.add_argument(
        "--slots", type=int_in(1, 64), default=1, help="requests generated at once (default: 1)"
    )
    group.add_argument(
        "--queue", type=int_in(0, 10_000), default=8, help="requests that may wait (default: 8)"
    )
    group.add_argument("--n-ctx", type=int_in(64, 1 << 22), help="context tokens per slot (default: 4096)")
    group.add_argument("--n-gpu-layers", type=int_in(-1, 100_000), default=-1, help="-1: all (default)")
    group.add_argument("--n-threads", type=int_in(1, 1024), help="CPU threads per slot")
    group.add_argument("--flash-attn", action="store_true", help="use flash attention")
    group.add_argument("--embedding", action="store_true", help="serve embeddings (only) with this model")
    group.add_argument("--chat-format", help="llama-cpp-python chat format (default: the GGUF's template)")
    group.add_argument(
        "--cache-dir", type=Path, default=default_cache_dir(), help="model cache (default: %(default)s)"
    )
    group.add_argument("--moderation-blocklist", type=Path, help="refuse requests containing a listed term")
    group.add_argument("--moderation-plugin", type=Path, help="a .py file defining allows(request) -> bool")


def _moderator(args: argparse.Namespace) -> Moderator | None:
    if args.moderation_blocklist and args.moderation_plugin:
        raise ModelError("use --moderation-blocklist or --moderation-plugin, not both")
    if args.moderation_blocklist:
        return Blocklist.from_file(args.moderation_blocklist)
    if args.moderation_plugin:
        return PluginModerator.from_file(args.moderation_plugin)
    return None


def _wrap(engine: ServingEngine, moderator: Moderator | None) -> ServingEngine:
    return engine if moderator is None else ModeratedEngine(engine, moderator)


@asynccontextmanager
async def open_engine(args: argparse.Namespace) -> AsyncIterator[ServingEngine]:
    """The engine the flags ask for; ModelError (one clear line) when they cannot work."""
    moderator = _moderator(args)
    if args.engine == "fake":
        yield _wrap(FakeEngine(token_delay_s=args.fake_token_delay_ms / 1000), moderator)
        return
    if not args.model:
        raise ModelError("--engine llama needs --model PATH (a GGUF file)")
    # Imported here: relays and fake-engine nodes run without llama-cpp-python.
    from tp_node.llama_engine import ModelConfig, open_llama_engine

    config = ModelConfig(
        path=resolve_model(args.model, args.cache_dir),
        model_id=args.model_id,
        slots=args.slots,
        queue_limit=args.queue,
        n_ctx=args.n_ctx,
        n_gpu_layers=args.n_gpu_layers,
        flash_attn=args.flash_attn,
        embedding=args.embedding,
        n_threads=args.n_threads,
        chat_format=args.chat_format,
    )
    async with open_llama_engine([config]) as engine:
        yield _wrap(engine, moderator)
