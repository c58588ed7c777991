"""What runs on a slot thread: a metered Llama, the request runners, and llama.cpp's log kept quiet.

A request runs llama-cpp-python's own streaming API (so chat templates, tool calls, JSON grammars and stop
sequences behave exactly as they do when llama-cpp-python is used directly) and puts its pieces into a
BatchPipe, which never makes this thread wait for trio. `MeteredLlama` counts tokens and checks the request's
cancel flag after every sampled token, so a cancelled request stops within one token.

Privacy: nothing here logs a prompt or an output, and neither may llama.cpp: its log is discarded except
while a model loads (when it can only be about the model file); llama-cpp-python runs with verbose=False.
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import MTMDChatHandler
from llama_cpp.llama_grammar import LlamaGrammar

from tp_net.protocol.inference_contract import EngineError, image_bytes
from tp_node.gguf_header import ModelError
from tp_node.handoff import BatchPipe, PipeClosed
from tp_node.inference import (
    InferenceRequest,
    embedding_chunk,
    final_chunk,
    for_choice,
    logprob_entry,
    tool_call_arguments,
    tool_call_start,
)
from tp_node.tool_grammar import parse_calls, plain_messages, system_prompt, tool_grammar

log = logging.getLogger(__name__)

SEED_MODULUS = 2**32
ERROR_MESSAGE_CHARS_MAX = 200
_LLAMA_WARN, _LLAMA_ERROR = 3, 4  # ggml_log_level (llama-cpp-python's _logger.py has the old numbering)

# llama-cpp-python swaps the process's stdout/stderr file descriptors while it creates or frees a model;
# two threads doing so at once can leave them pointing at /dev/null for good. One at a time.
_LIFECYCLE_LOCK = threading.Lock()
_forward_llama_log = threading.Event()


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # While requests run, llama.cpp may log request-derived text (a grammar from a JSON schema, for one).
    if _forward_llama_log.is_set() and level in (_LLAMA_WARN, _LLAMA_ERROR):
        log.warning("llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())


llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


def _route_mtmd_log() -> None:
    """libmtmd (images) has loggers of its own that print to stderr, the prompt's text among the rest
    ("add_text: ..."): they go through _llama_log too. Loaded only by nodes with a projector."""
    from llama_cpp import mtmd_cpp

    mtmd_cpp.mtmd_log_set(_llama_log, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(_llama_log, ctypes.c_void_p(0))


class MeteredLlama(llama_cpp.Llama):
    """A Llama that counts the tokens of a request and stops within one token once `cancel` is set.

    Every llama-cpp-python completion path (chat templates, tool-call handlers, raw completions) samples
    through `generate`, so this is the one place to count and to stop.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cancel = threading.Event()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.top_logprobs: int | None = None  # set: record each output token's log probability
        self.logprobs: list[dict[str, Any]] = []  # recorded since the last take_logprobs()

    def start_request(self, cancel: threading.Event, top_logprobs: int | None = None) -> None:
        self.cancel = cancel
        self.prompt_tokens = self.completion_tokens = 0
        self.top_logprobs, self.logprobs = top_logprobs, []
        # No KV-cache reuse across requests: another user's prefix hit would show in time to first token.
        self.reset()  # type: ignore[no-untyped-call]

    # llama-cpp-python calls generate(tokens, keyword=...) only; any keyword passes through.
    def generate(self, tokens: Sequence[int], **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
        self.prompt_tokens += len(tokens)
        for token in super().generate(tokens, **kwargs):
            if self.cancel.is_set():
                return
            # Counted as llama-cpp-python's own usage counts: the end-of-generation token is not output.
            if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                self.completion_tokens += 1
                if self.top_logprobs is not None:
                    self.logprobs.append(self._logprob(token, self.top_logprobs))
            yield token

    def _logprob(self, token: int, top: int) -> dict[str, Any]:
        """The sampled token's log probability under the model (the logits it was sampled from, before
        any bias or temperature), and the `top` most likely tokens there."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab(),)).astype(np.float64)
        logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
        best = np.argpartition(-logprobs, top)[:top] if 0 < top < len(logprobs) else np.arange(top)
        best = best[np.argsort(-logprobs[best], kind="stable")]
        alternatives = [(self._piece(int(i)), float(logprobs[i])) for i in best]
        return logprob_entry(self._piece(token), float(logprobs[token]), alternatives)

    def _piece(self, token: int) -> str:
        return self.detokenize([token]).decode("utf-8", errors="replace")

    def take_logprobs(self) -> list[dict[str, Any]]:
        taken, self.logprobs = self.logprobs, []
        return taken


class ChatDeltaTranslator:
    """llama-cpp-python chat deltas -> our chunks; tool calls in OpenAI's shape (id and name once)."""

    def __init__(self) -> None:
        self._started: set[int] = set()

    def feed(self, delta: Mapping[str, Any]) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if delta.get("content"):
            chunks.append({"text": delta["content"]})
        for call in delta.get("tool_calls") or ():
            index, function = int(call.get("index", 0)), call.get("function") or {}
            arguments = str(function.get("arguments") or "")
            if index in self._started:
                if arguments:
                    chunks.append(tool_call_arguments(index, arguments))
                continue
            self._started.add(index)
            chunks.append(
                tool_call_start(index, "call_" + secrets.token_hex(12), function["name"], arguments)
            )
        return chunks


def _seed(request: InferenceRequest, choice: int) -> int:
    # Without a seed every request gets fresh randomness, never a sequence shared with other users.
    if request.seed is None:
        return secrets.randbelow(SEED_MODULUS)
    return (request.seed + choice) % SEED_MODULUS  # each choice a generation of its own


def _sampling(request: InferenceRequest, choice: int) -> dict[str, Any]:
    return {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": _seed(request, choice),
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": dict(request.logit_bias) or None,
        "stream": True,
    }


def _chat_arguments(request: InferenceRequest, choice: int) -> dict[str, Any]:
    arguments = {"messages": plain_messages(request.messages), **_sampling(request, choice)}
    if request.response_format is not None:
        arguments["response_format"] = dict(request.response_format)
    if request.tools:
        arguments["tools"] = [dict(tool) for tool in request.tools]
        arguments["tool_choice"] = request.tool_choice
    return arguments


Output = BatchPipe[dict[str, Any]]
Emit = Callable[[dict[str, Any]], None]


def _chunks(result: object) -> closing[Generator[dict[str, Any], None, None]]:
    """llama-cpp-python's stream=True result: a generator of OpenAI-style chunk dicts."""
    return closing(cast("Generator[dict[str, Any], None, None]", result))


def _text(llm: MeteredLlama, text: str) -> dict[str, Any]:
    """A text piece, with the log probabilities of the tokens sampled since the previous one if asked."""
    if llm.top_logprobs is None:
        return {"text": text}
    return {"text": text, "logprobs": llm.take_logprobs()}


def _run_tool_chat(llm: MeteredLlama, request: InferenceRequest, choice: int, emit: Emit) -> str | None:
    """tool_choice "auto" or "required" (tp_node.tool_grammar): text streams as it comes; a call (output
    starting with "{") is held until it is whole, then sent as OpenAI's tool-call deltas."""
    mode, parallel = str(request.tool_choice), request.parallel_tool_calls
    grammar = LlamaGrammar.from_string(tool_grammar(request.tools, mode, parallel), verbose=False)
    messages = plain_messages(request.messages, system_prompt(request.tools, mode, parallel))
    arguments = {"messages": messages, **_sampling(request, choice), "grammar": grammar}
    held, is_text, finish = "", False, "length"
    with _chunks(llm.create_chat_completion(**arguments)) as stream:
        for chunk in stream:
            if llm.cancel.is_set():
                return None
            choice_delta = chunk["choices"][0]
            content = (choice_delta.get("delta") or {}).get("content") or ""
            if is_text and content:
                emit(_text(llm, content))
            elif content:
                held += content
                if not held.startswith("{"):
                    emit(_text(llm, held))
                    is_text, held = True, ""
            finish = choice_delta.get("finish_reason") or finish
    calls = parse_calls(held) if held else None
    if calls is None:
        if held:  # a call cut off by max_tokens or the context: sent as the text it is
            emit(_text(llm, held))
        return finish
    for index, (name, call_arguments) in enumerate(calls):
        emit(tool_call_start(index, "call_" + secrets.token_hex(12), name, call_arguments))
    return "tool_calls"


def _run_chat(llm: MeteredLlama, request: InferenceRequest, choice: int, emit: Emit) -> str | None:
    """One choice's pieces; its finish reason, or None when cancelled."""
    if request.tool_choice in ("auto", "required"):
        return _run_tool_chat(llm, request, choice, emit)
    translator, finish = ChatDeltaTranslator(), "length"
    with _chunks(llm.create_chat_completion(**_chat_arguments(request, choice))) as stream:
        for chunk in stream:
            if llm.cancel.is_set():
                return None
            choice_delta = chunk["choices"][0]
            for piece in translator.feed(choice_delta.get("delta") or {}):
                emit(_text(llm, piece["text"]) if "text" in piece else piece)
            finish = choice_delta.get("finish_reason") or finish
    return finish


def _run_completion(llm: MeteredLlama, request: InferenceRequest, choice: int, emit: Emit) -> str | None:
    finish = "length"
    with _chunks(llm.create_completion(prompt=request.prompt, **_sampling(request, choice))) as stream:
        for chunk in stream:
            if llm.cancel.is_set():
                return None
            choice_text = chunk["choices"][0]
            if choice_text.get("text"):
                emit(_text(llm, choice_text["text"]))
            finish = choice_text.get("finish_reason") or finish
    return finish


def _put(output: Output, choice: int, n: int, piece: dict[str, Any]) -> None:
    output.put(for_choice(piece, choice, n))


def _run_generation(llm: MeteredLlama, request: InferenceRequest, output: Output) -> None:
    """`n` choices one after the other on this slot, each a generation of its own; usage counts the prompt
    once and every choice's tokens."""
    unknown = [token for token in request.logit_bias if token >= llm.n_vocab()]
    if unknown:
        raise EngineError("invalid_logit_bias", f"logit_bias names token {unknown[0]}, not in the vocabulary")
    runner = _run_chat if request.kind == "chat" else _run_completion
    prompt_tokens = 0
    for choice in range(request.n):
        finish = runner(llm, request, choice, partial(_put, output, choice, request.n))
        if finish is None:
            return
        llm.take_logprobs()  # those of tokens no piece carried (a stop sequence's)
        prompt_tokens = prompt_tokens or llm.prompt_tokens
        end = (
            final_chunk(finish, prompt_tokens, llm.completion_tokens)
            if choice == request.n - 1
            else {"finish_reason": finish}
        )
        output.put(for_choice(end, choice, request.n))


def _run_embedding(llm: MeteredLlama, request: InferenceRequest, output: Output) -> None:
    prompt_tokens = 0
    for index, text in enumerate(request.inputs):
        if llm.cancel.is_set():
            return
        result = llm.create_embedding(text)
        output.put(embedding_chunk(index, cast("list[float]", result["data"][0]["embedding"])))
        prompt_tokens += int(result["usage"]["prompt_tokens"])
    output.put(final_chunk("stop", prompt_tokens, 0))


_RUNNERS: dict[str, Callable[[MeteredLlama, InferenceRequest, Output], None]] = {
    "chat": _run_generation,
    "completion": _run_generation,
    "embedding": _run_embedding,
}


@dataclass
class Job:
    request: InferenceRequest
    output: Output
    cancel: threading.Event
    release: Callable[[], None]


def _translate_error(exc: Exception, n_ctx: int) -> EngineError:
    """What the requester is told. Messages go back to the requester only, never to a log."""
    if isinstance(exc, EngineError):
        return exc
    message = str(exc)
    if isinstance(exc, ValueError) and "exceed context window" in message:
        return EngineError(
            "context_length_exceeded", f"the request needs more than the {n_ctx}-token context"
        )
    if isinstance(exc, ValueError):  # a chat template's raise_exception, a bad schema, ...
        return EngineError(
            "invalid_request", f"the model refused the request: {message[:ERROR_MESSAGE_CHARS_MAX]}"
        )
    log.error("inference failed (%s)", exc.__class__.__name__)
    return EngineError("internal_error", "the model failed on this request")


def run_job(job: Job, llm: MeteredLlama) -> None:
    """Runs on the slot's thread; always finishes the output and hands the slot back."""
    error: EngineError | None = None
    try:
        if not job.cancel.is_set():
            llm.start_request(job.cancel, job.request.logprobs)
            _RUNNERS[job.request.kind](llm, job.request, job.output)
    except PipeClosed:
        pass
    except Exception as exc:
        error = _translate_error(exc, llm.n_ctx())
    finally:
        # In this order: the slot is back in its pool before the requester sees the stream end.
        job.release()
        job.output.finish(error)


class DataUrlChatHandler(MTMDChatHandler):
    """llama-cpp-python's multimodal handler, reading images from data URLs only: its own loader would fetch
    any other URL (urllib), and a node never fetches. parse_request already refused those; this is the
    second line."""

    def load_image(self, image_url: str) -> bytes:
        return image_bytes(image_url)

    # Both swap the process's stdout/stderr descriptors (llama-cpp-python's suppress_stdout_stderr) while
    # slots run: one swap at a time, as for loading models (_LIFECYCLE_LOCK).
    def _init_mtmd_context(self, llama_model: llama_cpp.Llama) -> None:
        with _LIFECYCLE_LOCK:
            super()._init_mtmd_context(llama_model)

    def _create_bitmap_from_bytes(self, data: bytes) -> Any:
        with _LIFECYCLE_LOCK:
            return super()._create_bitmap_from_bytes(data)


def create_llama(arguments: dict[str, Any]) -> MeteredLlama:
    """A slot's Llama; with "mmproj", a multimodal chat handler of its own (llama.cpp's mtmd: images are
    taken from the messages' data URLs, never fetched: the request document holds no other kind)."""
    arguments = dict(arguments)
    mmproj = arguments.pop("mmproj", None)
    with _LIFECYCLE_LOCK:
        _forward_llama_log.set()
        try:
            if mmproj is not None:
                _route_mtmd_log()
                arguments["chat_handler"] = DataUrlChatHandler(clip_model_path=mmproj, verbose=False)
            return MeteredLlama(**arguments)
        except ValueError as exc:
            raise ModelError(f"llama.cpp could not load {arguments['model_path']}: {exc}") from exc
        finally:
            _forward_llama_log.clear()


def destroy_llama(llm: MeteredLlama) -> None:
    with _LIFECYCLE_LOCK:
        llm.close()
