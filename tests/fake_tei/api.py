"""Endpoint logic of the TEI stand-in: TEI 1.9.3's validation order, error texts and response shapes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from fake_tei import model as fm
from fake_tei.backend import Backend, Limits
from fake_tei.log import ERROR, INFO, Logger, Span, rust_duration
from fake_tei.metrics import Metrics
from fake_tei.schema import Body

SERVER_FILE, SERVER_TARGET = "router/src/http/server.rs", "text_embeddings_router::http::server"
DIRECTIONS = {"Right": "right", "right": "right", "Left": "left", "left": "left"}
STATUS = {"Empty": 400, "Validation": 422, "Tokenizer": 422, "Overloaded": 429, "Backend": 424, "Unhealthy": 503}
# The `te_request_failure{err=…}` label TEI counts for each error type, unless the raise site says otherwise
# (batch_size, tokenization, inference).
FAILURE_LABEL = {"Empty": "validation", "Validation": "validation", "Tokenizer": "tokenization",
                 "Overloaded": "overloaded", "Backend": "model_type"}
# What a failed batch answers: `TextEmbeddingsError::Backend(BackendError::Inference(<backend text>))`.
INFERENCE_FAILURE = "Backend error: fake inference failure (FAKE_TEI_HEALTH_FILE says 503)"


@dataclass(frozen=True)
class Info:
    """`GET /info`, field for field and in TEI's order."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    served_model_name: str
    model_type: dict
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str = "1.9.3"
    sha: str | None = None
    docker_label: str | None = None

    @property
    def is_reranker(self) -> bool:
        return "reranker" in self.model_type

    @property
    def pooling(self) -> str | None:
        return self.model_type.get("embedding", {}).get("pooling")


class ApiError(Exception):
    """A TEI `ErrorResponse`; `line` is where TEI logs it (None when TEI does not log it)."""

    def __init__(self, error_type: str, message: str, line: int | None = None, core: bool = False,
                 err: str | None = None, failures: int = 1) -> None:
        super().__init__(message)
        self.error_type, self.message, self.line, self.core = error_type, message, line, core
        self.status = STATUS[error_type]
        self.err, self.failures = err or FAILURE_LABEL.get(error_type, "validation"), failures

    def body(self, openai: bool) -> dict:
        if openai:
            return {"message": self.message, "code": self.status, "type": self.error_type}
        return {"error": self.message, "error_type": self.error_type}


@dataclass
class Timing:
    """What TEI reports per request: response headers and the handler span's fields."""

    chars: int = 0
    tokens: int = 0
    started: float = 0.0
    tokenization_s: float = 0.0
    queue_s: float = 0.0
    success: str | None = None  # the `method` label of `te_request_success`, when the handler counts one
    # Whether the client hung up: hyper then drops the handler, which closes its entries' response channels.
    client_gone: Callable[[], bool] = field(default=lambda: False)

    def inference_s(self) -> float:
        return max(time.monotonic() - self.started - self.tokenization_s - self.queue_s, 0.0)

    def span(self, name: str) -> Span:
        fields = [("total_time", time.monotonic() - self.started), ("tokenization_time", self.tokenization_s),
                  ("queue_time", self.queue_s), ("inference_time", self.inference_s())]
        return Span(name, [(k, f'"{rust_duration(v)}"') for k, v in fields])

    def headers(self) -> dict[str, str]:
        ms = int((time.monotonic() - self.started) * 1000)
        return {"x-compute-type": "gpu+optimized", "x-compute-time": str(ms), "x-compute-characters":
                str(self.chars), "x-compute-tokens": str(self.tokens), "x-total-time": str(ms),
                "x-tokenization-time": str(int(self.tokenization_s * 1000)),
                "x-queue-time": str(int(self.queue_s * 1000)), "x-inference-time": str(int(self.inference_s() * 1000))}

    def record_metrics(self, metrics: Metrics) -> None:
        """`ResponseMetadata::record_metrics` (router/src/lib.rs), once per successful inference request."""
        metrics.record("te_request_duration", time.monotonic() - self.started)
        metrics.record("te_request_tokenization_duration", self.tokenization_s)
        metrics.record("te_request_queue_duration", self.queue_s)
        metrics.record("te_request_inference_duration", self.inference_s())


class Engine:
    """The fake model server behind the routes; thread-safe, one permit per input like TEI's semaphore."""

    def __init__(self, info: Info, logger: Logger, delay_s: float = 0.0, default_prompt: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, batch_s: float = 0.0,
                 health_file: str | None = None, prompts: dict[str, str] | None = None) -> None:
        self.info, self.logger, self.delay_s, self.sleep = info, logger, delay_s, sleep
        self.default_prompt, self.prompts = default_prompt, dict(prompts or {})
        self.free_permits = info.max_concurrent_requests
        self.lock = threading.Lock()
        self.metrics = Metrics(info.max_input_length)
        self.backend = Backend(self.metrics, batch_s, health_file, sleep,
                               Limits(info.max_batch_tokens, info.max_batch_requests))

    def info_body(self) -> dict:
        return asdict(self.info)

    def requested(self, method: str, times: int = 1) -> str:
        """`te_request_count{method}`, where the handler counts it: after deserialisation, before validation."""
        self.metrics.counter("te_request_count", times, method=method)
        return method

    def run_batch(self, tokens: list[int], timing: Timing, classifier: bool) -> None:
        """Queue one entry per input (tokens of each) and wait for them; raise TEI's 424 when a batch fails."""
        prefix, inputs = ("te_predict" if classifier else "te_embed"), len(tokens)
        if not tokens:  # TEI 1.9's /predict takes an empty batch: no futures, an empty answer
            return
        entries = self.backend.infer(tokens, timing.client_gone)
        if not all(entry.ok for entry in entries):
            raise ApiError("Backend", INFERENCE_FAILURE, 448 if classifier else 382, core=True, err="inference",
                           failures=inputs)
        timing.queue_s += max(entry.started - entry.queued for entry in entries)
        self.metrics.counter(prefix + "_success", inputs)
        now = time.monotonic()
        for entry in entries:
            for name, value in (("duration", now - timing.started),
                                ("tokenization_duration", timing.tokenization_s),
                                ("queue_duration", entry.started - entry.queued),
                                ("inference_duration", entry.finished - entry.started)):
                self.metrics.record(f"{prefix}_{name}", value)

    def log_error(self, span: str, err: ApiError) -> None:
        if err.line is not None:
            target, file = (("text_embeddings_core::infer", "core/src/infer.rs") if err.core
                            else (SERVER_TARGET, SERVER_FILE))
            self.logger.log(ERROR, target, file, err.line, err.message.removeprefix("Backend error: ")
                            if err.core else err.message, Span(span))

    def log_success(self, span: str, line: int, timing: Timing) -> None:
        self.logger.log(INFO, SERVER_TARGET, SERVER_FILE, line, "Success", timing.span(span))

    # permits -----------------------------------------------------------------------------
    def acquire(self, n: int) -> None:
        with self.lock:
            if self.free_permits < n:
                raise ApiError("Overloaded", "Model is overloaded")
            self.free_permits -= n

    def release(self, n: int) -> None:
        with self.lock:
            self.free_permits += n

    # shared pieces -----------------------------------------------------------------------
    def check_batch(self, size: int, line: int) -> None:
        if size > self.info.max_client_batch_size:
            raise ApiError("Validation", f"batch size {size} > maximum allowed batch size "
                           f"{self.info.max_client_batch_size}", line, err="batch_size")

    def encode(self, item: str | list[int], truncate: bool, direction: str, prompt_name: str | None,
               timing: Timing) -> list[int]:
        """TEI's tokenization step: emptiness, prompt, character and token limits, truncation."""
        began = time.monotonic()
        if not item:
            raise ApiError("Empty", "Input validation error: `inputs` cannot be empty", 355, core=True,
                           err="tokenization")
        if prompt_name is not None and not self.prompts:
            raise ApiError("Validation", f"Input validation error: `default-prompt-name` is set to `{prompt_name}`"
                           " but no prompts were found in the Sentence Transformers configuration", 355, core=True,
                           err="tokenization")
        if prompt_name is not None and prompt_name not in self.prompts:
            raise ApiError("Validation", f"Input validation error: `default-prompt-name` is set to `{prompt_name}`"
                           " but it was not found in the Sentence Transformers prompts. Available prompts: "
                           f"[{', '.join(map(repr, self.prompts))}]", 355, core=True, err="tokenization")
        if isinstance(item, str) and prompt_name is not None:
            item = self.prompts[prompt_name] + item  # a request's prompt replaces the default one
        elif isinstance(item, str) and self.default_prompt:
            item = self.default_prompt + item
        limit = self.info.max_input_length
        if isinstance(item, str) and len(item) > limit * 250:
            raise ApiError("Validation", f"Input validation error: `inputs` must have less than {limit * 250} "
                           f"characters. Given: {len(item)}", 355, core=True,
                           err="tokenization")
        ids = fm.token_ids(item)
        if len(ids) > limit:
            if not truncate:
                raise ApiError("Validation", f"Input validation error: `inputs` must have less than {limit} "
                               f"tokens. Given: {len(ids)}", 355, core=True,
                               err="tokenization")
            ids = ids[-limit:] if direction == "left" else ids[:limit]
        self.metrics.record("te_request_input_length", float(len(ids)))
        timing.chars += len(item) if isinstance(item, str) else 0
        timing.tokens += len(ids)
        timing.tokenization_s += time.monotonic() - began
        return ids

    def pooled(self, items: list, truncate: bool, direction: str, prompt_name: str | None,
               normalize: bool, dims: int | None, timing: Timing) -> list[list[fm.F32]]:
        """Embed each input like `Infer::embed_pooled`, holding one permit per input for the request."""
        self.acquire(len(items))
        try:
            if self.info.is_reranker:
                raise ApiError("Backend", "Backend error: Model is not an embedding model", 338, core=True)
            self.metrics.counter("te_embed_count", len(items))  # per input, before tokenization (infer.rs)
            if dims == 0:
                raise ApiError("Validation", "Input validation error: `dimensions` should be positive", 252,
                               core=True)
            encoded = [self.encode(item, truncate, direction, prompt_name, timing) for item in items]
            if dims is not None and dims > fm.DIMS:
                raise ApiError("Validation", "Input validation error: `dimensions` should be smaller than the "
                               "maximum embedding dimension.", 280, core=True)
            self.sleep(self.delay_s)
            self.run_batch([len(ids) for ids in encoded], timing, classifier=False)
            return [fm.vector(ids, normalize, dims) for ids in encoded]
        finally:
            self.release(len(items))

    def request_options(self, body: Body) -> tuple[bool, str, str | None]:
        truncate = body.boolean("truncate", None)
        direction = body.choice("truncation_direction", DIRECTIONS, "Right")
        return (self.info.auto_truncate if truncate is None else truncate), direction, body.string("prompt_name")
