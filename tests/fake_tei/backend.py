"""TEI's inference pipeline behind the HTTP layer: the queue, the batching task, the one backend thread.

Modelled on TEI 1.9.3 (read, not copied):
* `core/src/queue.rs`: a FIFO of entries. `Append` adds `+inputs` to the gauge `te_queue_size`;
  every `NextBatch` (also one that finds the queue empty) records `te_batch_next_size` and
  `te_batch_next_tokens` and then *sets* `te_queue_size` to what is left in the queue.
* `core/src/infer.rs`: the batching task waits for a notification, then loops "reserve a place in
  the embed channel (capacity 1), take the next batch" until the queue is empty. So one batch runs,
  one more waits prefetched in the channel, and only the rest count in `te_queue_size`. The backend
  task hands one batch at a time to the backend thread and waits for its result.
* `backends/src/lib.rs`: ONE backend thread executes commands in order from its channel: batches
  and `/health`'s Health command (or its 1-token forward pass after a failure). A Health command
  therefore waits behind the batch in progress, but not behind queued or prefetched batches: the
  backend task sends the next batch only after the previous result came back, by which time a
  waiting Health command is already in the channel ahead of it.

Deviation, on purpose: TEI packs queued entries into one batch up to `--max-batch-tokens` /
`--max-batch-requests`; here every request is its own batch, so tests can count batches.

The backend's state comes from the health file, read as each command starts: `hung` holds the
thread (nothing completes, `/health` never answers) for as long as the file says so; `503` makes
every command fail at once (inference errors, `/health` 503). Anything else, or no file: normal.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fake_tei.metrics import Metrics

NORMAL, UNHEALTHY, HUNG = "normal", "unhealthy", "hung"
HUNG_POLL_S = 0.05


def read_state(path: str | None) -> str:
    """The backend state the health file asks for (re-read every time, so tests can flip it)."""
    if not path:
        return NORMAL
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return NORMAL
    return HUNG if "hung" in text else UNHEALTHY if "503" in text else NORMAL


@dataclass
class Job:
    """One backend command: a batch (one request's inputs) or a health check; the caller waits on `done`."""

    inputs: int = 0
    tokens: int = 0
    health: bool = False
    queued: float = field(default_factory=time.monotonic)
    started: float = 0.0
    finished: float = 0.0
    ok: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class Backend:
    """The queue, batching task, backend task and backend thread; all daemon threads, one condition."""

    def __init__(self, metrics: Metrics, batch_s: float, health_file: str | None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.metrics, self.batch_s, self.health_file, self.sleep = metrics, batch_s, health_file, sleep
        self.cv = threading.Condition()
        self.queue: deque[Job] = deque()     # core/src/queue.rs entries
        self.notified = False                # the batching task's tokio::sync::Notify permit
        self.slot: Job | None = None         # the embed channel (capacity 1): the prefetched batch
        self.commands: deque[Job] = deque()  # the backend thread's command channel
        for target in (self._batching_task, self._backend_task, self._backend_thread):
            threading.Thread(target=target, daemon=True).start()

    # callers (HTTP handler threads) -----------------------------------------------------------
    def infer(self, inputs: int, tokens: int) -> Job:
        """Queue one request as one batch and wait for its result (forever, when the backend hangs)."""
        job = Job(inputs, tokens)
        with self.cv:
            self.queue.append(job)
            self.metrics.gauge_add("te_queue_size", inputs)
            self.notified = True
            self.cv.notify_all()
        job.done.wait()
        return job

    def health(self) -> bool:
        """`Backend::health`: a command behind the batch in progress."""
        job = Job(health=True)
        with self.cv:
            self.commands.append(job)
            self.cv.notify_all()
        job.done.wait()
        return job.ok

    # TEI's tasks ------------------------------------------------------------------------------
    def _batching_task(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.notified)
                self.notified = False
            while True:
                with self.cv:
                    self.cv.wait_for(lambda: self.slot is None)  # reserve a place in the embed channel
                    job = self._next_batch()
                    if job is None:
                        break
                    self.slot = job
                    self.cv.notify_all()

    def _next_batch(self) -> Job | None:
        job = self.queue.popleft() if self.queue else None
        self.metrics.record("te_batch_next_size", float(job.inputs if job else 0))
        self.metrics.record("te_batch_next_tokens", float(job.tokens if job else 0))
        self.metrics.gauge_set("te_queue_size", float(sum(j.inputs for j in self.queue)))
        return job

    def _backend_task(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.slot is not None)
                job, self.slot = self.slot, None
                assert job is not None
                self.commands.append(job)
                self.cv.notify_all()
            job.done.wait()

    def _backend_thread(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: bool(self.commands))
                job = self.commands.popleft()
            job.started = time.monotonic()
            state = read_state(self.health_file)
            while state == HUNG:
                self.sleep(HUNG_POLL_S)
                state = read_state(self.health_file)
            if state == NORMAL and not job.health:
                self.sleep(self.batch_s)
            job.ok, job.finished = state == NORMAL, time.monotonic()
            job.done.set()
