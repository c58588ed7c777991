"""Optional moderation at the node: after the request is decrypted, before inference. Off by default.

An operator may refuse some requests on their own hardware: with a blocklist file (one term a line, `#`
comments; a request whose text contains a term, compared case-insensitively after Unicode NFKC
normalisation, is refused) or with a Python plugin file defining `allows(request: dict) -> bool` (it gets
the request document; it runs in a worker thread, so it may be slow). A refused request gets the error
`content_policy_violation`; a plugin that raises or returns a non-bool fails closed (`moderation_failed`).
Nothing about the request's text is logged, not even which term matched.
"""

from __future__ import annotations

import importlib.util
import logging
import unicodedata
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, Protocol

import trio

from tp_net.protocol.inference_contract import EngineError
from tp_node.engine import ModelInfo, ServingEngine
from tp_node.gguf_header import ModelError
from tp_node.inference import InferenceRequest, parse_request

log = logging.getLogger(__name__)

PLUGIN_FUNCTION = "allows"
PLUGIN_THREADS_MAX = 4


class ModerationConfigError(ModelError):
    """A blocklist or plugin file that cannot be used."""


class Moderator(Protocol):
    async def allows(self, document: Mapping[str, Any], request: InferenceRequest) -> bool: ...


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


class Blocklist:
    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = tuple(sorted({_normalise(term) for term in terms if term.strip()}))
        if not self.terms:
            raise ModerationConfigError("a blocklist needs at least one term")

    @classmethod
    def from_file(cls, path: Path) -> Blocklist:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModerationConfigError(f"cannot read blocklist {path}: {exc.__class__.__name__}") from exc
        terms = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not terms:
            raise ModerationConfigError(f"blocklist {path} has no terms")
        return cls(terms)

    async def allows(self, document: Mapping[str, Any], request: InferenceRequest) -> bool:
        text = _normalise("\n".join(request.texts()))
        return not any(term in text for term in self.terms)


class PluginModerator:
    def __init__(self, function: Callable[[dict[str, Any]], Any]) -> None:
        self._function = function
        self._limiter = trio.CapacityLimiter(PLUGIN_THREADS_MAX)

    @classmethod
    def from_file(cls, path: Path) -> PluginModerator:
        if not path.is_file():
            raise ModerationConfigError(f"moderation plugin {path} does not exist")
        spec = importlib.util.spec_from_file_location("tp_node_moderation_plugin", path)
        if spec is None or spec.loader is None:
            raise ModerationConfigError(f"moderation plugin {path} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModerationConfigError(f"moderation plugin {path} failed to load: {exc!r}") from exc
        function = getattr(module, PLUGIN_FUNCTION, None)
        if not callable(function):
            raise ModerationConfigError(
                f"moderation plugin {path} defines no {PLUGIN_FUNCTION}(request) function"
            )
        return cls(function)

    async def allows(self, document: Mapping[str, Any], request: InferenceRequest) -> bool:
        try:
            verdict = await trio.to_thread.run_sync(self._function, dict(document), limiter=self._limiter)
        except Exception as exc:
            # No traceback: an exception's text may quote the request.
            log.error("moderation plugin raised %s", exc.__class__.__name__)  # noqa: TRY400
            raise EngineError("moderation_failed", "the node's moderation hook failed") from None
        if not isinstance(verdict, bool):
            log.error("moderation plugin returned %s, not a bool", type(verdict).__name__)
            raise EngineError("moderation_failed", "the node's moderation hook failed")
        return verdict


class ModeratedEngine:
    """Checks each request with `moderator` before `engine` sees it."""

    def __init__(self, engine: ServingEngine, moderator: Moderator) -> None:
        self._engine = engine
        self._moderator = moderator

    def models(self) -> tuple[ModelInfo, ...]:
        return self._engine.models()

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        if not await self._moderator.allows(request, parse_request(request)):
            log.info("a request was refused by the moderation hook")
            raise EngineError("content_policy_violation", "this node's content policy refused the request")
        async with aclosing(self._engine.generate(request)) as chunks:
            async for chunk in chunks:
                yield chunk
