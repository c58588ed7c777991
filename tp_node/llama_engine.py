"""The llama-cpp-python engine: GGUF models served from dedicated slot threads, tokens streamed in batches.

Each model has `slots` worker threads, each with its own Llama instance (a Llama is not thread-safe, and it
runs fastest on the thread that created it), behind a SlotPool that lets at most `queue_limit` requests wait.
What runs on those threads is in tp_node.llama_jobs; here: loading, admission, and the trio side of a
request, which takes the pieces in batches (see HANDOFF_INTERVAL_S) and stops the job when it is closed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import llama_cpp
import trio

from tp_net.protocol.inference_contract import MODEL_ID_CHARS_MAX, EngineError
from tp_node.engine import ModelInfo
from tp_node.gguf_header import GgufInfo, ModelError, read_gguf_info
from tp_node.gpu_fit import model_shape, with_fewer_layers
from tp_node.handoff import BatchPipe
from tp_node.inference import InferenceRequest, coalesce, parse_request
from tp_node.llama_jobs import Job, MeteredLlama, create_llama, destroy_llama, run_job
from tp_node.models import verified_sha256
from tp_node.slots import SlotPool, SlotWorker

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 4096
N_CTX_MIN = 64
SLOTS_MAX = 64
QUEUE_LIMIT_MAX = 10_000
EMBEDDING_POOLING_TYPES = (1, 2, 3)  # mean, cls, last: one vector per input
# Trio takes a batch of tokens at most this often (the first token and the end go at once). Each wake runs
# Python on the trio thread (and, in a node, the onion crypto of the cells), which competes with the slot
# thread for the GIL: on the 2-core CPU VM a wake per token streamed at 0.82x of llama-cpp-python used
# directly, a wake per 20 ms at 0.92-0.98x (docs/BENCHMARKS.md). 20 ms is below what a reader of a stream
# notices, and packs ~10 GPU tokens into one chunk (one cell).
HANDOFF_INTERVAL_S = 0.02


@dataclass(frozen=True)
class ModelConfig:
    path: Path
    model_id: str | None = None  # default: the file name without .gguf
    sha256: str | None = None  # the hash the file must have (pinned or trusted on first use); None: any
    slots: int = 1
    queue_limit: int = 8
    n_ctx: int | None = None  # default: DEFAULT_N_CTX, or the trained context if shorter
    n_gpu_layers: int = -1  # -1: every layer on the GPU (none without a GPU build)
    flash_attn: bool = False
    embedding: bool = False  # load for embeddings (then only embedding requests are served)
    n_threads: int | None = None
    chat_format: str | None = None  # default: the GGUF's own chat template
    mmproj: Path | None = None  # the multimodal projector GGUF: the model then reads images (vision)
    handoff_interval_s: float = HANDOFF_INTERVAL_S

    def checked(self) -> ModelConfig:
        model_id = self.model_id or self.path.name.removesuffix(".gguf")
        problems = [
            (
                not 1 <= len(model_id) <= MODEL_ID_CHARS_MAX,
                f"model id must be 1..{MODEL_ID_CHARS_MAX} characters",
            ),
            (not 1 <= self.slots <= SLOTS_MAX, f"slots must be in 1..{SLOTS_MAX}"),
            (not 0 <= self.queue_limit <= QUEUE_LIMIT_MAX, f"queue limit must be in 0..{QUEUE_LIMIT_MAX}"),
            (self.n_ctx is not None and self.n_ctx < N_CTX_MIN, f"n_ctx must be at least {N_CTX_MIN}"),
            (self.n_gpu_layers < -1, "n_gpu_layers must be -1 (all) or a layer count"),
            (self.n_threads is not None and self.n_threads < 1, "n_threads must be at least 1"),
            (not 0 <= self.handoff_interval_s <= 1, "the hand-off interval must be in 0..1 s"),
            (self.mmproj is not None and self.embedding, "a projector (mmproj) is for chat models"),
            (self.mmproj is not None and not self.mmproj.is_file(), f"no projector file {self.mmproj}"),
        ]
        for failed, message in problems:
            if failed:
                raise ModelError(f"model {self.path}: {message}")
        return dataclasses.replace(self, model_id=model_id)


def _llama_arguments(config: ModelConfig, info: GgufInfo) -> dict[str, Any]:
    trained = info.trained_context_length or DEFAULT_N_CTX
    arguments: dict[str, Any] = {
        "model_path": str(config.path),
        "n_ctx": config.n_ctx or min(DEFAULT_N_CTX, trained),
        "n_gpu_layers": config.n_gpu_layers,
        "flash_attn": config.flash_attn,
        "n_threads": config.n_threads,
        "chat_format": config.chat_format,
        "verbose": False,
    }
    if config.mmproj is not None:  # each slot's Llama gets a chat handler of its own (create_llama)
        arguments["mmproj"] = str(config.mmproj)
    if config.embedding:
        pooling = info.pooling_type
        # One batch holds a whole input; llama-cpp-python truncates inputs to the batch size.
        arguments.update(embedding=True, n_batch=arguments["n_ctx"], n_ubatch=arguments["n_ctx"])
        # A generative model has no pooling of its own: average the tokens for one vector per input.
        keep = pooling in EMBEDDING_POOLING_TYPES
        arguments["pooling_type"] = (
            llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if keep else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        )
    return arguments


@dataclass
class _Model:
    config: ModelConfig
    info: GgufInfo
    sha256: str
    n_ctx: int
    workers: list[SlotWorker[MeteredLlama]]
    pool: SlotPool[SlotWorker[MeteredLlama]] = field(init=False)

    def __post_init__(self) -> None:
        self.pool = SlotPool(self.workers, self.config.queue_limit)

    def describe(self) -> ModelInfo:
        assert self.config.model_id is not None
        return ModelInfo(
            model_id=self.config.model_id,
            sha256=self.sha256,
            parameter_count=self.info.parameter_count,
            quantisation=self.info.quantisation,
            context_length=self.n_ctx,
            max_concurrent=self.pool.size,
            queue_limit=self.pool.queue_limit,
            active_requests=self.pool.active,
            queued_requests=self.pool.waiting,
            embedding=self.config.embedding,
            vision=self.config.mmproj is not None,
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join()


def _start_worker(config: ModelConfig, arguments: dict[str, Any], slot: int) -> SlotWorker[MeteredLlama]:
    worker = SlotWorker(f"llama-{config.model_id}-{slot}", partial(create_llama, arguments), destroy_llama)
    try:
        worker.wait_ready()
    except BaseException:
        worker.stop()
        worker.join()
        raise
    return worker


def _start_first_worker(config: ModelConfig, arguments: dict[str, Any]) -> SlotWorker[MeteredLlama]:
    """Slot 0; where the GPU cannot hold every requested layer, with fewer (`arguments` is updated to the
    layer count the other slots then use)."""
    if arguments["n_gpu_layers"] == 0 or not llama_cpp.llama_supports_gpu_offload():
        return _start_worker(config, arguments, 0)

    def load(layers: int) -> SlotWorker[MeteredLlama]:
        return _start_worker(config, {**arguments, "n_gpu_layers": layers}, 0)

    worker, layers = with_fewer_layers(load, arguments["n_gpu_layers"], model_shape(config.path).layers)
    arguments["n_gpu_layers"] = layers
    return worker


def _start_workers(config: ModelConfig, arguments: dict[str, Any]) -> list[SlotWorker[MeteredLlama]]:
    workers: list[SlotWorker[MeteredLlama]] = []
    try:
        workers.append(_start_first_worker(config, arguments))
        for slot in range(1, config.slots):
            workers.append(_start_worker(config, arguments, slot))
    except BaseException:
        for worker in workers:
            worker.stop()
            worker.join()
        raise
    return workers


def load_model(config: ModelConfig) -> _Model:
    """Check the file, hash it, and start its slots (blocking: seconds for a big model)."""
    config = config.checked()
    info = read_gguf_info(config.path)
    if not config.embedding and not info.has_chat_template and config.chat_format is None:
        log.warning(
            "%s has no chat template: llama-cpp-python will guess one (set a chat format)", config.path
        )
    sha256 = verified_sha256(config.path, config.sha256)
    arguments = _llama_arguments(config, info)
    return _Model(config, info, sha256, arguments["n_ctx"], _start_workers(config, arguments))


class LlamaEngine:
    """Serves the loaded models; `close` (or open_llama_engine) stops the slot threads."""

    def __init__(self, models: Sequence[_Model]) -> None:
        self._models = {model.config.model_id: model for model in models if model.config.model_id}
        self._cancels: set[threading.Event] = set()

    @classmethod
    def load(cls, configs: Sequence[ModelConfig]) -> LlamaEngine:
        checked = [config.checked() for config in configs]
        ids = [config.model_id for config in checked]
        if len(set(ids)) != len(ids):
            raise ModelError(f"two models have the same id; ids: {ids}")
        models: list[_Model] = []
        try:
            for config in checked:
                models.append(load_model(config))
        except BaseException:
            for model in models:
                model.stop()
            raise
        return cls(models)

    def models(self) -> tuple[ModelInfo, ...]:
        return tuple(model.describe() for model in self._models.values())

    def close(self) -> None:
        """Stop every request within a token, then end the slot threads (blocking)."""
        for cancel in list(self._cancels):
            cancel.set()
        for model in self._models.values():
            model.stop()

    def _model_for(self, request: InferenceRequest) -> _Model:
        if request.model is None and len(self._models) == 1:
            model = next(iter(self._models.values()))
        elif request.model in self._models:
            model = self._models[request.model]
        else:
            served = ", ".join(sorted(self._models))
            raise EngineError("model_not_found", f"this node serves {served}; name one of them as model")
        if (request.kind == "embedding") != model.config.embedding:
            served_kind = "embedding" if model.config.embedding else "chat and completion"
            raise EngineError(
                "unsupported_kind", f"model {model.config.model_id} serves {served_kind} requests"
            )
        if request.images and model.config.mmproj is None:
            raise EngineError(
                "vision_unsupported",
                f"model {model.config.model_id} on this node was started without a projector",
            )
        return model

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        parsed = parse_request(request)
        model = self._model_for(parsed)
        worker = await model.pool.acquire()
        token = trio.lowlevel.current_trio_token()
        job = Job(parsed, BatchPipe(), threading.Event(), partial(model.pool.release_soon, worker, token))
        self._cancels.add(job.cancel)
        worker.submit(partial(run_job, job))
        try:
            while batch := await job.output.take(model.config.handoff_interval_s):
                for chunk in coalesce(batch):
                    yield chunk
        finally:
            job.cancel.set()
            job.output.abandon()
            self._cancels.discard(job.cancel)


@asynccontextmanager
async def open_llama_engine(configs: Sequence[ModelConfig]) -> AsyncIterator[LlamaEngine]:
    """Load in a thread (trio keeps running), and always stop the slot threads at the end."""
    engine = await trio.to_thread.run_sync(LlamaEngine.load, configs)
    try:
        yield engine
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(engine.close)
