"""TEI's inference pipeline behind the HTTP layer: the queue, the batching task, the one backend thread.

Modelled on TEI 1.9.3 (read, not copied):
* `core/src/infer.rs` (`Infer::embed`, `Infer::predict`): every input of a request is its own queue
  entry (a batch request joins one future per input), so a request's inputs may land in different
  batches, and entries of different requests share one.
* `core/src/queue.rs` (`queue_blocking_task`): a FIFO of entries. `Append` adds 1 to the gauge
  `te_queue_size` per entry. `NextBatch` pops entries in order: an entry whose response receiver is
  closed (its client went away and hyper dropped the handler) is skipped and counted as
  `te_request_failure{err="dropped"}`; the rest are packed while the tokens stay within
  `--max-batch-tokens` (the entry that would exceed it goes back to the front) and, when set, until
  `--max-batch-requests` entries. Every `NextBatch`, also one that finds nothing, records
  `te_batch_next_size` (entries) and `te_batch_next_tokens`, then *sets* `te_queue_size` to what is left.
* `core/src/infer.rs` (`batching_task`): waits for a notification, then loops "reserve a place in the
  embed channel (capacity 1), take the next batch" until the queue is empty. So one batch runs, one
  more waits prefetched in the channel, and only the rest count in `te_queue_size`. The backend task
  hands one batch at a time to the backend thread and waits for its result.
* `backends/src/lib.rs` (`BackendThread`): ONE backend thread executes commands in order from its
  channel: batches and `/health`'s Health command (or its 1-token forward pass after a failure). A
  Health command waits behind the batch in progress, but not behind queued or prefetched batches, and
  it never touches the queue (so never `te_queue_size`): the backend task sends the next batch only
  after the previous result came back, by which time a waiting Health command is already in the
  channel ahead of it.

Not modelled: padded models (`total_tokens = max_length * entries`); the stand-in counts tokens as an
unpadded (flash / candle CPU) model does.

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
GONE_POLL_S = 0.05  # how often a waiting handler looks whether its client hung up (hyper notices EOF at once)


class ClientGone(Exception):
    """The client closed its connection while its request waited: hyper drops the handler, nothing is answered."""


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
class Entry:
    """One queue entry: one input of a request; its handler waits on `done`."""

    tokens: int
    queued: float = field(default_factory=time.monotonic)
    dropped: bool = False  # the receiver is closed: the client went away before a batch took this entry
    started: float = 0.0
    finished: float = 0.0
    ok: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Command:
    """One backend-thread command: a batch of entries, or a health check (no entries)."""

    entries: list[Entry] = field(default_factory=list)
    ok: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Limits:
    """`--max-batch-tokens` and `--max-batch-requests` (None: only the token budget bounds a batch)."""

    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None


class Backend:
    """The queue, batching task, backend task and backend thread; all daemon threads, one condition."""

    def __init__(self, metrics: Metrics, batch_s: float, health_file: str | None,
                 sleep: Callable[[float], None] = time.sleep, limits: Limits | None = None) -> None:
        self.metrics, self.batch_s, self.health_file, self.sleep = metrics, batch_s, health_file, sleep
        self.limits = limits or Limits()
        self.cv = threading.Condition()
        self.queue: deque[Entry] = deque()      # core/src/queue.rs entries
        self.notified = False                   # the batching task's tokio::sync::Notify permit
        self.slot: Command | None = None        # the embed channel (capacity 1): the prefetched batch
        self.commands: deque[Command] = deque()  # the backend thread's command channel
        for target in (self._batching_task, self._backend_task, self._backend_thread):
            threading.Thread(target=target, daemon=True).start()

    # callers (HTTP handler threads) -----------------------------------------------------------
    def infer(self, tokens: list[int], client_gone: Callable[[], bool] = lambda: False) -> list[Entry]:
        """Queue one entry per input and wait for all of them (forever, when the backend hangs).

        Raises ClientGone when `client_gone()` turns true first: the entries still queued are then
        dropped by the next NextBatch, as TEI's closed response channels are."""
        entries = [Entry(count) for count in tokens]
        with self.cv:
            self.queue.extend(entries)
            self.metrics.gauge_add("te_queue_size", len(entries))
            self.notified = True
            self.cv.notify_all()
        for entry in entries:
            while not entry.done.wait(GONE_POLL_S):
                if client_gone():
                    with self.cv:
                        for mine in entries:
                            mine.dropped = True
                    raise ClientGone
        return entries

    def health(self) -> bool:
        """`Backend::health`: a command behind the batch in progress; never a queue entry."""
        command = Command()
        with self.cv:
            self.commands.append(command)
            self.cv.notify_all()
        command.done.wait()
        return command.ok

    # TEI's tasks ------------------------------------------------------------------------------
    def _batching_task(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.notified)
                self.notified = False
            while True:
                with self.cv:
                    self.cv.wait_for(lambda: self.slot is None)  # reserve a place in the embed channel
                    batch = self._next_batch()
                    if batch is None:
                        break
                    self.slot = batch
                    self.cv.notify_all()

    def _next_batch(self) -> Command | None:
        """`NextBatch` of queue.rs; called with the condition held."""
        batch: list[Entry] = []
        tokens, limits = 0, self.limits
        while self.queue:
            entry = self.queue.popleft()
            if entry.dropped:
                self.metrics.counter("te_request_failure", err="dropped")
                continue
            if tokens + entry.tokens > limits.max_batch_tokens:
                self.queue.appendleft(entry)
                break
            batch.append(entry)
            tokens += entry.tokens
            if len(batch) == limits.max_batch_requests:
                break
        self.metrics.record("te_batch_next_size", float(len(batch)))
        self.metrics.record("te_batch_next_tokens", float(tokens))
        self.metrics.gauge_set("te_queue_size", float(len(self.queue)))
        return Command(batch) if batch else None

    def _backend_task(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.slot is not None)
                batch, self.slot = self.slot, None
                assert batch is not None
                self.commands.append(batch)
                self.cv.notify_all()
            batch.done.wait()

    def _backend_thread(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: bool(self.commands))
                command = self.commands.popleft()
            started = time.monotonic()
            state = read_state(self.health_file)
            while state == HUNG:
                self.sleep(HUNG_POLL_S)
                state = read_state(self.health_file)
            if state == NORMAL and command.entries:
                self.sleep(self.batch_s)
            command.ok, finished = state == NORMAL, time.monotonic()
            for entry in command.entries:
                entry.started, entry.finished, entry.ok = started, finished, command.ok
                entry.done.set()
            command.done.set()
