"""Who may do what: a presented key against the keys in force -> allow, 401, 403 or 429 (pure, clock passed in).

The keys in force are the implicit key ``default`` (the generated key, EMBED_API_KEY, RERANK_API_KEY)
plus the keys file's. Keys are compared by their SHA-256 in constant time against every key in force,
so neither the answer's timing nor the file reveals a key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from embed_launcher.gateway.keyfile import DEFAULT_ID, KeyEntry, hash_key

# What a route needs: None (public), "any" (a model listing: any valid key), or a scope.
Need = str | None
HEADERS = ("authorization", "x-api-key", "api-key")


@dataclass(frozen=True)
class Grant:
    """A key that passed: its id and what it may use (for the model check once the model is known)."""

    id: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None

    def allows(self, names: Iterable[str]) -> bool:
        """Whether a model known by ``names`` (served name and aliases) is among the key's models."""
        return self.models is None or any(n in self.models for n in names)

    def may_use(self) -> str:
        """What the key may use, for a 403 (its own scopes and models only: never another key's)."""
        models = "every model" if self.models is None else "the models " + ", ".join(self.models)
        return f"scopes {', '.join(self.scopes)} on {models}"


@dataclass(frozen=True)
class Decision:
    """The answer: 200 (go on, with ``grant``; None on an open route), 401, 403 or 429."""

    status: int
    grant: Grant | None = None
    message: str = ""
    retry_after_s: int | None = None


@dataclass
class Bucket:
    """A token bucket: ``capacity`` requests at once, refilled at ``per_s`` a second."""

    capacity: float
    per_s: float
    tokens: float
    last: float

    def take(self, now: float) -> int | None:
        """None when a token was taken; else the whole seconds until one is there (Retry-After)."""
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.last) * self.per_s)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / self.per_s))


@dataclass(frozen=True)
class KeyRing:
    """The keys in force: the implicit ``default`` entries and the file's.

    ``closed``: a keys file is configured but could not be read at start, so nothing is open even
    when no key is set (fail closed; the implicit key still works).
    """

    keys: tuple[KeyEntry, ...] = ()
    closed: bool = False
    digests: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)
    guarded: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once per reload, not per request: the digests to compare, the scopes some key covers.
        object.__setattr__(self, "digests", tuple(bytes.fromhex(k.sha256) for k in self.keys))
        object.__setattr__(self, "guarded", frozenset(s for k in self.keys for s in k.scopes))

    @classmethod
    def build(cls, embed_key: str | None, rerank_key: str | None, file_keys: Sequence[KeyEntry] = (),
              *, closed: bool = False) -> KeyRing:
        """The implicit key(s) plus ``file_keys``: one ``default`` entry when both kinds share a key."""
        implicit: list[KeyEntry] = []
        if embed_key and embed_key == rerank_key:
            implicit.append(KeyEntry(DEFAULT_ID, hash_key(embed_key), ("embed", "rerank", "metrics")))
        else:
            if embed_key:
                implicit.append(KeyEntry(DEFAULT_ID, hash_key(embed_key), ("embed", "metrics")))
            if rerank_key:
                implicit.append(KeyEntry(DEFAULT_ID, hash_key(rerank_key), ("rerank",)))
        return cls((*implicit, *file_keys), closed)

    def is_open(self, need: Need) -> bool:
        """An open route needs no key: no key in force covers it (today's rule when a key is disabled)."""
        if need is None:
            return True
        if self.closed:
            return False
        if need == "any":
            return not self.keys
        return need not in self.guarded

    def match(self, candidates: Sequence[str]) -> KeyEntry | None:
        """The key among ``candidates``, compared with every key in force (no early exit)."""
        found: KeyEntry | None = None
        for candidate in candidates:
            digest = hashlib.sha256(candidate.encode("utf-8", "surrogateescape")).digest()
            for entry, stored in zip(self.keys, self.digests, strict=True):
                if hmac.compare_digest(digest, stored) and found is None:
                    found = entry
        return found


def candidates(headers: Mapping[str, str]) -> list[str]:
    """The keys a request presents: `Authorization: Bearer k`, `Authorization: k`, `X-API-Key: k`, `api-key: k`.

    ``headers`` is case-insensitive (aiohttp's CIMultiDictProxy); the auth scheme is too (RFC 9110).
    """
    found = []
    for name in HEADERS:
        value = headers.get(name)
        if not value:
            continue
        value = value.strip()
        if name == "authorization":
            scheme, _, rest = value.partition(" ")
            if scheme.lower() == "bearer":  # `Bearer` alone (the key missing) is no key either
                value = rest.strip()
        if value:
            found.append(value)
    return found


def decide(ring: KeyRing, presented: Sequence[str], need: Need, *, wall: float, mono: float,
           buckets: dict[str, Bucket], share: int = 1) -> Decision:
    """The answer for a request needing ``need`` that presents ``presented``.

    ``wall`` (epoch seconds) judges expiry, ``mono`` feeds the token buckets; ``buckets`` (by key id)
    is this worker's state, kept across calls. With ``share`` workers each gets rpm/share.
    """
    if ring.is_open(need):
        return Decision(200)
    entry = ring.match(presented)
    if entry is None or (entry.expires is not None and entry.expires <= datetime.fromtimestamp(wall, UTC)):
        return Decision(401)
    grant = Grant(entry.id, entry.scopes, entry.models)
    if need != "any" and need not in entry.scopes:
        return Decision(403, grant, f"this API key ({entry.id}) may not use {need} routes; it may use "
                                    f"{grant.may_use()}")
    if entry.rpm is not None:
        wait = bucket_for(buckets, entry, share, mono).take(mono)
        if wait is not None:
            return Decision(429, grant, f"this API key ({entry.id}) is over its rate limit of {entry.rpm} "
                                        f"requests per minute; retry after {wait} s", wait)
    return Decision(200, grant)


def bucket_for(buckets: dict[str, Bucket], entry: KeyEntry, share: int, now: float) -> Bucket:
    """The key's bucket; a new one (full) when the key is new or its rpm changed."""
    assert entry.rpm is not None
    per_minute = entry.rpm / max(1, share)
    bucket = buckets.get(entry.id)
    if bucket is None or not math.isclose(bucket.per_s, per_minute / 60.0):
        capacity = max(1.0, per_minute)
        bucket = buckets[entry.id] = Bucket(capacity, per_minute / 60.0, capacity, now)
    return bucket


def model_refusal(grant: Grant | None, names: Sequence[str], asked: object) -> str | None:
    """The 403 message when ``grant`` may not use the model known by ``names`` (``asked``: the name the
    client used, None for the route's default); None when it may. Names no model the client did not."""
    if grant is None or grant.allows(names):
        return None
    what = f"the model `{asked}`" if isinstance(asked, str) and asked else "this route's default model"
    return f"this API key ({grant.id}) may not use {what}; it may use {grant.may_use()}"
