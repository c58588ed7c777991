"""tp-node's engine flags, and opening the engine they describe (fake or llama, optionally moderated)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tp_cli.common import int_in
from tp_node.engine import FakeEngine, ServingEngine
from tp_node.gguf_header import ModelError
from tp_node.models import default_cache_dir, resolve_model
from tp_node.moderation import Blocklist, ModeratedEngine, Moderator, PluginModerator

log = logging.getLogger(__name__)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference engine")
    group.add_argument(
        "--engine",
        choices=["fake", "llama"],
        help="(default: llama, which needs --model; fake answers made-up words and is only for tests)",
    )
    group.add_argument(
        "--fake-token-delay-ms", type=float, default=0.0, help="fake engine: delay before each token"
    )
    group.add_argument(
        "--model",
        metavar="ID_OR_FILE",
        help="a GGUF file, or a catalogue id (`tp-node models list`), pulled first if it is not cached",
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
    group.add_argument(
        "--mmproj",
        type=Path,
        metavar="FILE",
        help="the model's multimodal projector GGUF: it then reads images (advertised as vision); with "
        "--engine fake the file is not read and the fake counts the images it is sent",
    )
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
        fake = FakeEngine(token_delay_s=args.fake_token_delay_ms / 1000, vision=args.mmproj is not None)
        log.warning(
            "--engine fake: serving model %r, made-up words and no language model (for tests only)",
            fake.model_id,
        )
        yield _wrap(fake, moderator)
        return
    if not args.model:
        raise ModelError(
            "give --model ID_OR_FILE (a catalogue id from `tp-node models list`, or a GGUF file); "
            "--engine fake serves a test engine instead"
        )
    # Imported here: relays and fake-engine nodes run without llama-cpp-python.
    from tp_node.llama_engine import ModelConfig, open_llama_engine

    model = await trio.to_thread.run_sync(resolve_model, args.model, args.cache_dir)
    config = ModelConfig(
        path=model.path,
        sha256=model.sha256,
        model_id=args.model_id or model.model_id,
        slots=args.slots,
        queue_limit=args.queue,
        n_ctx=args.n_ctx,
        n_gpu_layers=args.n_gpu_layers,
        flash_attn=args.flash_attn,
        embedding=args.embedding,
        n_threads=args.n_threads,
        chat_format=args.chat_format,
        mmproj=args.mmproj,
    )
    async with open_llama_engine([config]) as engine:
        yield _wrap(engine, moderator)
