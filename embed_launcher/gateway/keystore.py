"""The keys in force in one gateway process: loaded at start, re-read when the file changes or on SIGHUP.

A change is noticed by the file's identity (device, inode, size, mtime), checked before every key
decision (one stat call) and, with no traffic, every POLL_S: so a revoked key is refused from the next
request on, on every worker, and a Kubernetes Secret's symlink swap is caught too (inotify on the file
itself would miss it). A file
with an error is refused as a whole: the keys in force stay, and one line names the file, the line
and the problem. Requests already past the key check are not touched by a reload.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from embed_launcher.gateway.access import Bucket, Decision, KeyRing, Need, candidates, decide
from embed_launcher.gateway.keyfile import KeyEntry, KeyFileError, parse_keys
from embed_launcher.gateway.keyuse import UseRecord
from embed_launcher.gateway.logs import say, say_about_request

POLL_S = 0.5  # with no traffic, a change is applied (and its line logged) within this
LOG_EVERY_S = 10.0  # 429s of one key are logged at most this often (a client over its limit retries a lot)
KEYS_FILE_VAR = "EMBED_API_KEYS_FILE"
Signature = tuple[int, int, int, int] | None


def signature(path: Path) -> Signature:
    """What changes when the file is replaced or edited; None while it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_keys(path: Path) -> tuple[KeyEntry, ...]:
    """The file's keys; a missing file holds none; KeyFileError for anything unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(str(path), 0, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_keys(text, str(path))


class KeyStore:
    """The ring in force plus this worker's token buckets; ``decide`` is what the dispatcher asks."""

    def __init__(self, embed_key: str | None, rerank_key: str | None, path: Path | None, *, workers: int = 1,
                 say: Callable[[str], None] = print, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic, uses: UseRecord | None = None,
                 about_request: Callable[[str], None] | None = None) -> None:
        self.embed_key, self.rerank_key, self.path = embed_key, rerank_key, path
        self.uses = uses or UseRecord(None, say)
        self.workers, self.say, self.wall, self.mono = workers, say, wall, mono
        # A line about the request being decided (a 429) names its id: logs.say_about_request in the gateway
        self.about_request = about_request or say
        self.buckets: dict[str, Bucket] = {}
        self.seen: Signature = None
        self.failed: Signature | None = None  # the signature whose refusal was already logged
        self.last_429: dict[str, float] = {}
        self.ring = self._initial()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], workers: int = 1) -> KeyStore:
        path = environ.get(KEYS_FILE_VAR) or None

        return cls(environ.get("EMBED_GATEWAY_EMBED_KEY") or None, environ.get("EMBED_GATEWAY_RERANK_KEY") or None,
                   Path(path) if path else None, workers=workers, say=say, uses=UseRecord.from_environ(environ, say),
                   about_request=say_about_request)

    def _initial(self) -> KeyRing:
        """At start the launcher has checked the file; if it broke since, serve the implicit key only
        and keep watching (fail closed: no route opens because the file is unreadable)."""
        if self.path is None:
            return KeyRing.build(self.embed_key, self.rerank_key)
        self.seen = signature(self.path)
        try:
            keys = read_keys(self.path)
        except KeyFileError as exc:
            self.failed = self.seen
            self.say(f"Error: {exc}; only the default key is in force until it is fixed")
            return KeyRing.build(self.embed_key, self.rerank_key, closed=True)
        self.say(loaded_line(self.path, keys))
        return KeyRing.build(self.embed_key, self.rerank_key, keys)

    def decide(self, headers: Mapping[str, str], need: Need) -> Decision:
        self.poll()  # a stat: each worker sees a change on its next request, not on its next poll
        wall = self.wall()
        decision = decide(self.ring, candidates(headers), need, wall=wall, mono=self.mono(),
                          buckets=self.buckets, share=self.workers)
        if decision.grant is not None:
            self.uses.used(decision.grant.id, wall)
        if decision.status == 429 and decision.grant is not None:
            now = self.mono()
            if now - self.last_429.get(decision.grant.id, float("-inf")) >= LOG_EVERY_S:
                self.last_429[decision.grant.id] = now
                self.about_request(f"Key {decision.grant.id}: over its rate limit (429; logged once per"
                                   f" {LOG_EVERY_S:g} s)")
        return decision

    def poll(self, force: bool = False) -> bool:
        """Re-read the file when it changed (or ``force``: SIGHUP); True when new keys are in force."""
        if self.path is None:
            return False
        now = signature(self.path)
        if now == self.seen and not force:
            return False
        self.seen = now
        try:
            keys = read_keys(self.path)
        except KeyFileError as exc:
            if force or now != self.failed:
                self.say(f"Error: {exc}; the keys file was refused, the previous keys stay in force")
            self.failed = now
            return False
        self.failed = None
        self.ring = KeyRing.build(self.embed_key, self.rerank_key, keys)
        live = {k.id for k in keys}
        for gone in [i for i in self.buckets if i not in live]:
            del self.buckets[gone]
        self.say(loaded_line(self.path, keys))
        return True

    async def watch(self, stop: asyncio.Event, interval_s: float = POLL_S) -> None:
        """Poll until ``stop``; a failing poll is logged, never fatal (the gateway keeps serving)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
            try:
                if not stop.is_set():
                    self.poll()
                self.uses.flush(self.mono(), force=stop.is_set())
            except Exception as exc:  # a bug here must not take the gateway down
                self.say(f"Error: watching the keys file failed ({type(exc).__name__}: {exc})")


def loaded_line(path: Path, keys: tuple[KeyEntry, ...]) -> str:
    """One line: how many keys, and their ids (never a key)."""
    ids = ", ".join(k.id for k in keys) or "none"
    return f"Keys file {path}: {len(keys)} key{'s' if len(keys) != 1 else ''} in force ({ids})"
