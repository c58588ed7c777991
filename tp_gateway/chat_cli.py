"""tp-chat: chat with a model of the token.place network from a terminal (`python -m tp_gateway.chat_cli`).

The overlay runs in this process (tp_gateway.overlay, the gateway's client side, no gateway process and no
socket besides the links to relays). Interactive: pick a model, then type; answers stream as they come,
Ctrl-C stops an answer (not the program), the conversation is kept for the next turn, `/new` forgets it,
`/quit` or Ctrl-D leaves. `--once PROMPT` prints one answer and exits, for scripts. Prompts and answers go
to this terminal only: nothing of them is logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, TextIO

import trio

from tp_cli.common import EXIT_FAILURE, int_in
from tp_cli.launch import default_data_dir
from tp_gateway.client import GUARD_FILE
from tp_gateway.overlay import Overlay, OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapError, load_bootstrap
from tp_net.protocol.inference_contract import MAX_TOKENS_LIMIT
from tp_net.trio.transport_ws import WebSocketDialer

EXIT_INTERRUPTED = 130
DIRECTORY_WAIT_S = 30.0  # for the first signed directory
MODEL_WAIT_S = 30.0  # after it, for a node serving a model to be listed
MODEL_POLL_S = 0.5
LINE_BYTES_MAX = 64 * 1024  # one typed line; longer input is refused, not buffered without bound
READ_BYTES = 4096
COMMANDS_HELP = "/new forgets the conversation, /quit (or Ctrl-D) leaves, Ctrl-C stops an answer"


class ChatError(Exception):
    """A reason to stop, safe to show: it never carries a prompt or an answer."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tp-chat",
        description="Chat with a model of a token.place network from this terminal (the overlay runs in "
        "this process; no gateway needed).",
        epilog=f"In a chat: {COMMANDS_HELP}.",
    )
    parser.add_argument(
        "--bootstrap", type=Path, help="the network's bootstrap file (default: the bundled one)"
    )
    parser.add_argument("--model", help="the model to ask (default: pick from those the network serves)")
    parser.add_argument("--once", metavar="PROMPT", help="ask PROMPT, print the answer, exit")
    parser.add_argument(
        "--max-tokens",
        type=int_in(1, MAX_TOKENS_LIMIT),
        default=512,
        help="longest answer (default: %(default)s)",
    )
    parser.add_argument("--system", help="a system message that starts the conversation")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir("client"),
        help="where the chosen guard relays are kept (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        bootstrap = load_bootstrap(args.bootstrap)
        return trio.run(_chat, args, bootstrap)
    except (ChatError, BootstrapError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # Ctrl-C outside an answer in --once mode, or while connecting
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


async def _chat(args: argparse.Namespace, bootstrap: Bootstrap) -> int:
    args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    failure: ChatError | None = None
    async with trio.open_nursery() as nursery:
        overlay = Overlay(
            bootstrap, WebSocketDialer(nursery), rng=random.Random(), guard_file=args.data_dir / GUARD_FILE
        )
        nursery.start_soon(overlay.run)
        try:
            await _session(overlay, args)
        except ChatError as exc:  # raised out of the nursery, not inside an exception group
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return 0


async def _session(overlay: Overlay, args: argparse.Namespace) -> None:
    lines = LineReader() if args.once is None else None
    model = await _pick_model(overlay, args, lines)
    if lines is None:
        await _answer_once(Conversation(overlay, model, args), args.once)
    else:
        await _interactive(overlay, model, args, lines)


async def _answer_once(conversation: Conversation, prompt: str) -> None:
    """`--once`: a network still forming may list the node before enough relays for a path; ask again until
    MODEL_WAIT_S has passed (the gateway's clients retry its 503 no_path the same way)."""
    deadline = trio.current_time() + MODEL_WAIT_S
    while True:
        try:
            await conversation.answer(prompt, sys.stdout)
        except ChatError as exc:
            cause = exc.__cause__
            no_path = isinstance(cause, OverlayError) and cause.code == "no_path"
            if not no_path or trio.current_time() > deadline:
                raise
        else:
            return
        await trio.sleep(MODEL_POLL_S)


async def _pick_model(overlay: Overlay, args: argparse.Namespace, lines: LineReader | None) -> str:
    with trio.move_on_after(DIRECTORY_WAIT_S):
        await overlay.ready.wait()
    if not overlay.ready.is_set():
        raise ChatError(
            f"no signed directory of network {overlay.bootstrap.network!r} after {DIRECTORY_WAIT_S:.0f} s: "
            "check the bootstrap file and that the network's authorities are up"
        )
    with trio.move_on_after(MODEL_WAIT_S):
        while not overlay.model_ids():  # a network just started lists its first node within a period
            await trio.sleep(MODEL_POLL_S)
    models = overlay.model_ids()
    if args.model:
        if args.model not in models:
            served = ", ".join(models) if models else "none"
            raise ChatError(f"no node of this network serves model {args.model!r} (models served: {served})")
        return str(args.model)
    if not models:
        raise ChatError(f"no node of network {overlay.bootstrap.network!r} serves a model yet")
    if len(models) == 1:
        return models[0]
    if lines is None:
        raise ChatError(f"this network serves several models; name one with --model: {', '.join(models)}")
    return await _ask_model(models, lines)


async def _ask_model(models: list[str], lines: LineReader) -> str:
    for number, model in enumerate(models, start=1):
        print(f"  {number}. {model}")
    while True:
        print(f"model [1-{len(models)}]: ", end="", flush=True)
        line = await lines.next_line()
        if line is None:
            raise ChatError("no model chosen")
        text = line.strip()
        if text in models:
            return text
        if text.isdigit() and 1 <= int(text) <= len(models):
            return models[int(text) - 1]


class Conversation:
    def __init__(self, overlay: Overlay, model: str, args: argparse.Namespace) -> None:
        self.overlay = overlay
        self.model = model
        self.max_tokens = int(args.max_tokens)
        self.system = args.system
        self.messages: list[dict[str, str]] = []
        self.new()

    def new(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    async def answer(self, prompt: str, out: TextIO) -> str:
        """Stream the answer to `prompt` to `out`; the turn (and what was shown of the answer, if it was
        stopped) joins the conversation."""
        self.messages.append({"role": "user", "content": prompt})
        document: dict[str, Any] = {
            "kind": "chat",
            "model": self.model,
            "messages": list(self.messages),
            "max_tokens": self.max_tokens,
        }
        shown: list[str] = []
        try:
            async with aclosing(self.overlay.generate(self.model, document)) as chunks:
                async for chunk in chunks:
                    text = chunk.get("text")
                    if isinstance(text, str):
                        shown.append(text)
                        out.write(text)
                        out.flush()
        except OverlayError as exc:
            self.messages.pop()
            raise ChatError(str(exc)) from exc
        finally:
            if shown:
                self.messages.append({"role": "assistant", "content": "".join(shown)})
            out.write("\n")
            out.flush()
        return "".join(shown)


async def _interactive(overlay: Overlay, model: str, args: argparse.Namespace, lines: LineReader) -> None:
    conversation = Conversation(overlay, model, args)
    print(f"chatting with {model} over network {overlay.bootstrap.network!r} ({COMMANDS_HELP})")
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:
            answering: list[trio.CancelScope] = []
            nursery.start_soon(_on_interrupt, interrupts, answering)
            while True:
                print("> ", end="", flush=True)
                line = await lines.next_line()
                if line is None or line.strip() == "/quit":
                    break
                prompt = line.strip()
                if prompt == "/new":
                    conversation.new()
                    print("(a new conversation)")
                    continue
                if not prompt:
                    continue
                with trio.CancelScope() as scope:
                    answering.append(scope)
                    try:
                        await conversation.answer(prompt, sys.stdout)
                    except ChatError as exc:
                        print(f"error: {exc}", file=sys.stderr)
                    finally:
                        answering.remove(scope)
                if scope.cancelled_caught:
                    print("(stopped)")
            nursery.cancel_scope.cancel()
    print()


async def _on_interrupt(interrupts: Any, answering: list[trio.CancelScope]) -> None:
    async for _ in interrupts:
        if answering:
            answering[-1].cancel()
        else:
            print(f"\n({COMMANDS_HELP})\n> ", end="", flush=True)


class LineReader:
    """Lines typed on stdin, read without blocking trio (a terminal in its usual line mode sends them
    whole)."""

    def __init__(self, fd: int | None = None) -> None:
        self._stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno() if fd is None else fd))
        self._buffer = b""
        self._eof = False

    async def next_line(self) -> str | None:
        while b"\n" not in self._buffer and not self._eof:
            if len(self._buffer) > LINE_BYTES_MAX:
                self._buffer = b""
                raise ChatError(f"a line longer than {LINE_BYTES_MAX} bytes")
            data = await self._stream.receive_some(READ_BYTES)
            self._eof = not data
            self._buffer += data
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace")


if __name__ == "__main__":
    sys.exit(main())
