"""tp-gateway: the local OpenAI-compatible gateway (`python -m tp_gateway.cli` works too)."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import trio

from tp_cli.common import (
    add_bootstrap_argument,
    add_common_arguments,
    host_port,
    resolve_settings,
    run_role,
)
from tp_cli.launch import announce
from tp_gateway.app import create_app
from tp_gateway.client import GUARD_FILE
from tp_gateway.http_guard import SiteRules, is_address, is_loopback, origin_argument
from tp_gateway.overlay import Overlay
from tp_gateway.public_guard import PublicPolicy
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.traffic_shaping import COVER_CELLS_PER_S_MAX, COVER_STREAM_OFF, CoverStream
from tp_net.trio.transport_ws import WebSocketDialer

log = logging.getLogger(__name__)

API_KEY_ENV = "TP_API_KEY"
INSECURE_FLAG = "--insecure-no-api-key"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tp-gateway",
        description="Run the local OpenAI-compatible gateway into the token.place overlay.",
    )
    parser.add_argument(
        "--listen",
        type=host_port,
        default=("127.0.0.1", 8000),
        help="HOST:PORT of the HTTP API (default 127.0.0.1:8000; beyond this host only with --api-key)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; none)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="also answer requests for this Host (a name other machines use to reach the gateway); "
        "loopback names and the listen address are always served (repeatable)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        type=cors_origin,
        metavar="ORIGIN",
        help="let pages from this origin (https://app.example.com) call the API: CORS headers for it; "
        "other sites' requests are refused (repeatable; default: none)",
    )
    parser.add_argument(
        "--model-alias",
        action="append",
        default=[],
        type=model_alias,
        metavar="ALIAS=MODEL",
        help="also list MODEL as ALIAS in /v1/models and serve requests for ALIAS with it (repeatable)",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="serve other people: sealed routes (/v1/sealed) for any origin and address, rate-limited per "
        "address; plaintext inference routes for loopback clients only (no --api-key needed)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve HTTPS with this certificate chain (with --tls-key); default: plain HTTP, for a reverse "
        "proxy that terminates TLS in front",
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--cover-stream",
        type=_cover_stream,
        default=COVER_STREAM_OFF,
        metavar="CELLS_PER_S",
        help="send DROP cells on idle pooled circuits at random times at this mean rate, at most "
        f"{COVER_CELLS_PER_S_MAX} (default 0: off; its cost and what it hides: docs/PROTOCOL.md 5.8)",
    )
    parser.add_argument(
        INSECURE_FLAG,
        action="store_true",
        help="serve a non-loopback --listen without --api-key: anyone who reaches the port uses the "
        "gateway (logged as a warning at every start)",
    )
    add_bootstrap_argument(parser)
    add_common_arguments(parser, "gateway")
    return parser


def model_alias(text: str) -> tuple[str, str]:
    alias, _, model = text.partition("=")
    if not alias or not model:
        raise argparse.ArgumentTypeError("expected ALIAS=MODEL")
    return alias, model


def cors_origin(text: str) -> str:
    try:
        return origin_argument(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def exposure_error(args: argparse.Namespace) -> str | None:
    """Why these settings must not start (a keyless gateway beyond this machine, half a TLS pair), or None."""
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    host = args.listen[0]
    if is_loopback(host) or args.api_key or args.insecure_no_api_key or args.public:
        return None
    return (
        f"--listen {host} is reachable from other machines: set --api-key (or ${API_KEY_ENV}), listen on "
        f"127.0.0.1, or pass {INSECURE_FLAG} to serve it to anyone"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = resolve_settings(parser, "gateway", argv)
    error = exposure_error(args)
    if error is not None:
        parser.error(error)  # before anything binds
    return run_role(_gateway, args)


async def serve_gateway(
    app: object,
    host: str,
    port: int,
    tls: tuple[Path, Path] | None = None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the app with hypercorn (HTTPS with `tls` = (certificate, key)); reports the API's base URL."""
    config = hypercorn.config.Config()
    config.bind = [f"{host}:{port}"]
    if tls is not None:
        config.certfile, config.keyfile = str(tls[0]), str(tls[1])
    config.accesslog = None  # request lines could carry model names; nothing about content ever
    config.errorlog = logging.getLogger("hypercorn.error")  # through our logging, at our level
    config.graceful_timeout = 1.0

    async def started(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn.trio.serve(app, config, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(started)
        task_status.started(urls[0].rstrip("/") + "/v1")


def _cover_stream(text: str) -> CoverStream:
    try:
        return CoverStream(rate_cells_per_s=float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


async def _gateway(args: argparse.Namespace, nursery: trio.Nursery) -> None:
    bootstrap = load_bootstrap(args.bootstrap)
    args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    overlay = Overlay(
        bootstrap,
        WebSocketDialer(nursery),
        rng=random.Random(),
        guard_file=args.data_dir / GUARD_FILE,
        cover=args.cover_stream,
    )
    nursery.start_soon(overlay.run)
    host = args.listen[0]
    if not is_loopback(host) and not args.api_key and not args.public:
        log.warning(
            "%s: the gateway on %s has no API key; anyone who reaches the port uses it",
            INSECURE_FLAG,
            host,
        )
    # An address literal is served with the port through the connection's local address; a name as given.
    names = [*args.allow_host] if is_address(host) else [host, *args.allow_host]
    site = SiteRules.of(hosts=names, cors_origins=args.cors_origin)
    public = PublicPolicy() if args.public else None
    app = create_app(overlay, site=site, api_key=args.api_key, aliases=dict(args.model_alias), public=public)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    base_url = await nursery.start(serve_gateway, app, *args.listen, tls)
    with trio.move_on_after(30):
        await overlay.ready.wait()
    announce({"role": "gateway", "base_url": base_url, "ready": overlay.ready.is_set()})


if __name__ == "__main__":
    sys.exit(main())
