"""Key decisions as a table on a fake clock (gateway/access.py), and the keys file's parsing (gateway/keyfile.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from embed_launcher.gateway.access import Bucket, Decision, KeyRing, candidates, decide, model_refusal
from embed_launcher.gateway.keyfile import (
    KeyEntry,
    KeyFileError,
    hash_key,
    parse_expires,
    parse_keys,
    render_entry,
    with_entry,
    without_entry,
)
from embed_launcher.gateway.keyuse import UseRecord, read_uses, use_file

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
FILE_KEYS = (
    KeyEntry("all", hash_key("k-all")),
    KeyEntry("embedder", hash_key("k-embed"), ("embed",), ("small",)),
    KeyEntry("ranker", hash_key("k-rank"), ("rerank",)),
    KeyEntry("old", hash_key("k-old"), expires=datetime.fromtimestamp(T0 + 60, UTC)),
    KeyEntry("slow", hash_key("k-slow"), rpm=2),
    KeyEntry("watcher", hash_key("k-metrics"), ("metrics",)),
)
RING = KeyRing.build("k-default", "k-default", FILE_KEYS)


def ask(ring: KeyRing, key: str | None, need: str | None, at: float = 0.0,
        buckets: dict[str, Bucket] | None = None, share: int = 1) -> Decision:
    return decide(ring, [key] if key else [], need, wall=T0 + at, mono=at,
                  buckets={} if buckets is None else buckets, share=share)


@pytest.mark.parametrize(("key", "need", "at", "status", "who"), [
    ("k-default", "embed", 0, 200, "default"),
    ("k-default", "rerank", 0, 200, "default"),
    ("k-default", "any", 0, 200, "default"),
    ("k-all", "embed", 0, 200, "all"),
    ("k-all", "rerank", 0, 200, "all"),
    ("k-all", "metrics", 0, 403, "all"),  # metrics is not a default scope
    ("k-embed", "embed", 0, 200, "embedder"),
    ("k-embed", "rerank", 0, 403, "embedder"),
    ("k-embed", "any", 0, 200, "embedder"),  # a listing: any valid key
    ("k-rank", "embed", 0, 403, "ranker"),
    ("k-metrics", "metrics", 0, 200, "watcher"),
    ("k-old", "embed", 59, 200, "old"),
    ("k-old", "embed", 60, 401, None),  # expired: as unknown
    ("nope", "embed", 0, 401, None),
    (None, "embed", 0, 401, None),
    (None, None, 0, 200, None),  # public route
    ("nope", None, 0, 200, None),
])
def test_decisions(key: str | None, need: str | None, at: float, status: int, who: str | None) -> None:
    decision = ask(RING, key, need, at)
    assert decision.status == status
    assert (decision.grant.id if decision.grant else None) == who


def test_a_403_names_what_the_key_may_use_and_nothing_else() -> None:
    message = ask(RING, "k-embed", "rerank").message
    assert "embedder" in message and "embed" in message and "small" in message
    assert not any(other in message for other in ("ranker", "k-embed", "k-all", "default", "watcher"))


@pytest.mark.parametrize(("names", "asked", "refused"), [
    (("BAAI/bge-small-en-v1.5", "small"), "BAAI/bge-small-en-v1.5", False),  # by served name, key lists alias
    (("BAAI/bge-m3",), "BAAI/bge-m3", True),
    (("BAAI/bge-m3",), None, True),
])
def test_models_by_name_or_alias(names: tuple[str, ...], asked: str | None, refused: bool) -> None:
    grant = ask(RING, "k-embed", "embed").grant
    message = model_refusal(grant, names, asked)
    assert (message is not None) is refused
    if message:
        assert "small" in message and ("default model" in message if asked is None else asked in message)


def test_an_unrestricted_key_and_an_open_route_pass_any_model() -> None:
    assert model_refusal(ask(RING, "k-all", "embed").grant, ("x",), "x") is None
    assert model_refusal(None, ("x",), "x") is None


def test_rpm_is_a_token_bucket_with_retry_after() -> None:
    buckets: dict[str, Bucket] = {}
    assert [ask(RING, "k-slow", "embed", 0, buckets).status for _ in range(3)] == [200, 200, 429]
    refused = ask(RING, "k-slow", "embed", 1, buckets)
    assert (refused.status, refused.retry_after_s) == (429, 29)  # 2 rpm: one token every 30 s
    assert "2 requests per minute" in refused.message and "slow" in refused.message
    assert ask(RING, "k-slow", "embed", 30, buckets).status == 200
    assert ask(RING, "k-slow", "embed", 31, buckets).status == 429
    assert ask(RING, "k-all", "embed", 31, buckets).status == 200  # another key: its own bucket


def test_with_several_workers_each_gets_its_share() -> None:
    buckets: dict[str, Bucket] = {}
    ring = KeyRing.build(None, None, (KeyEntry("k", hash_key("k"), rpm=60),))
    statuses = [ask(ring, "k", "embed", 0, buckets, share=4).status for _ in range(16)]
    assert statuses.count(200) == 15  # 60 / 4 workers
    assert ask(ring, "k", "embed", 4, buckets, share=4).status == 200  # 15 a minute: one every 4 s


def test_a_changed_rpm_gets_a_new_bucket() -> None:
    buckets: dict[str, Bucket] = {}
    one = KeyRing.build(None, None, (KeyEntry("k", hash_key("k"), rpm=1),))
    assert [ask(one, "k", "embed", 0, buckets).status for _ in range(2)] == [200, 429]
    more = KeyRing.build(None, None, (KeyEntry("k", hash_key("k"), rpm=100),))
    assert ask(more, "k", "embed", 0, buckets).status == 200


@pytest.mark.parametrize(("embed", "rerank", "file", "closed", "need", "open_"), [
    (None, None, (), False, "embed", True),  # no key at all: open, as today
    (None, None, (), False, "any", True),
    ("e", None, (), False, "rerank", True),  # RERANK_API_KEY="": that family stays open
    ("e", None, (), False, "embed", False),
    ("e", None, (), False, "any", False),
    (None, None, FILE_KEYS, False, "embed", False),  # the file's keys guard what they cover
    (None, None, (), True, "embed", False),  # a configured file that could not be read: closed
    (None, None, (), True, None, True),
])
def test_which_routes_are_open(embed: str | None, rerank: str | None, file: tuple[KeyEntry, ...], closed: bool,
                               need: str | None, open_: bool) -> None:
    assert KeyRing.build(embed, rerank, file, closed=closed).is_open(need) is open_


def test_separate_default_keys_keep_their_families() -> None:
    ring = KeyRing.build("e", "r")
    assert ask(ring, "e", "embed").status == 200 and ask(ring, "e", "rerank").status == 403
    assert ask(ring, "r", "rerank").status == 200 and ask(ring, "r", "embed").status == 403


@pytest.mark.parametrize(("headers", "keys"), [
    ({"authorization": "Bearer k"}, ["k"]),
    ({"authorization": "bearer k"}, ["k"]),
    ({"authorization": "k"}, ["k"]),  # LlamaIndex's TEI client
    ({"x-api-key": "k"}, ["k"]),
    ({"api-key": "k"}, ["k"]),  # Azure's form
    ({"authorization": "Bearer a", "x-api-key": "b"}, ["a", "b"]),
    ({"authorization": "Bearer "}, []),
    ({"authorization": "Bearer"}, []),
    ({}, []),
])
def test_header_forms(headers: dict[str, str], keys: list[str]) -> None:
    assert candidates(headers) == keys


def test_any_presented_key_may_pass() -> None:
    assert decide(RING, ["nope", "k-all"], "embed", wall=T0, mono=0, buckets={}).status == 200


# the file ---------------------------------------------------------------------------------------
GOOD = """# keys for the search team
[[keys]]
id = "search"
sha256 = "HASH_A"
scopes = ["embed"]
models = ["small", "BAAI/bge-m3"]
expires = 2027-01-01T00:00:00Z
rpm = 600

[[keys]]
id = "ranker"
sha256 = "HASH_B"
expires = "2027-06-01T00:00:00+02:00"
""".replace("HASH_A", hash_key("a")).replace("HASH_B", hash_key("b").upper())


def test_a_good_file() -> None:
    search, ranker = parse_keys(GOOD, "keys.toml")
    assert (search.id, search.scopes, search.models, search.rpm, search.line) == (
        "search", ("embed",), ("small", "BAAI/bge-m3"), 600, 2)
    assert search.expires == datetime(2027, 1, 1, tzinfo=UTC)
    assert (ranker.scopes, ranker.models, ranker.rpm, ranker.line) == (("embed", "rerank"), None, None, 10)
    assert ranker.sha256 == hash_key("b")  # hex case does not matter
    assert parse_keys("", "k.toml") == ()


def table(extra: str = "", ident: str = "a", lead: str = "") -> str:
    """One [[keys]] table with a valid hash, ``extra`` lines appended, ``lead`` lines before it."""
    return f'{lead}[[keys]]\nid = "{ident}"\nsha256 = "{hash_key(ident)}"\n{extra}'


@pytest.mark.parametrize(("text", "line", "problem"), [
    ('[[keys]]\nid = "a"\nsha256 = "abc"\n', 1, "64 hexadecimal"),
    (table('scopes = ["admin"]\n'), 1, "not admin"),
    (table("expires = 2027-01-01T00:00:00\n", lead="\n\n"), 3, "offset"),
    (table('expires = "soon"\n'), 1, "RFC 3339"),
    (table("rpm = 0\n"), 1, "rpm"),
    (table("models = []\n"), 1, "models"),
    (table('key = "k"\n'), 1, "unknown field 'key'"),
    (table(ident="default"), 1, "reserved"),
    (table(ident="a b"), 1, "`id`"),
    (table() + table(), 4, "used twice"),
    ('[[keys]]\nid = "a"\nsha256 = = "x"\n', 3, "not valid TOML"),
    ("keys = 1\n", 0, "array of tables"),
    ("[other]\nx = 1\n", 0, "unknown top-level key 'other'"),
])
def test_a_bad_file_names_the_line_and_the_problem(text: str, line: int, problem: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_keys(text, "/etc/keys.toml")
    assert caught.value.line == line and problem in caught.value.problem, str(caught.value)
    assert str(caught.value).startswith("keys file /etc/keys.toml" + (f" line {line}:" if line else ":"))


def test_append_and_remove_keep_the_rest_of_the_file() -> None:
    entry = KeyEntry("new", hash_key("n"), ("rerank",), ("reranker",), datetime(2027, 1, 1, tzinfo=UTC), 5)
    text = with_entry(GOOD, entry)
    keys = parse_keys(text, "k")
    assert [k.id for k in keys] == ["search", "ranker", "new"]
    assert keys[2] == KeyEntry("new", hash_key("n"), ("rerank",), ("reranker",), datetime(2027, 1, 1, tzinfo=UTC),
                               5, keys[2].line)
    removed = without_entry(text, keys[1])
    assert [k.id for k in parse_keys(removed, "k")] == ["search", "new"]
    assert removed.startswith("# keys for the search team")
    assert render_entry(entry) in removed


def test_expires_from_the_command_line() -> None:
    assert parse_expires("2027-01-01T00:00:00Z") == datetime(2027, 1, 1, tzinfo=UTC)
    for bad in ("2027-01-01T00:00:00", "tomorrow"):
        with pytest.raises(ValueError):
            parse_expires(bad)


# the last-use record ------------------------------------------------------------------------------
def test_the_use_record_is_written_at_most_every_interval_and_only_when_changed(tmp_path: Path) -> None:
    lines: list[str] = []
    record = UseRecord(use_file(tmp_path, "3"), lines.append)
    record.flush(0.0)
    assert not (tmp_path / ".key_use.3.json").exists()  # nothing used yet: nothing written
    record.used("a", 100.0)
    record.flush(0.0)
    assert read_uses(tmp_path) == {"a": 100.0}
    record.used("a", 200.0)
    record.flush(5.0)
    assert read_uses(tmp_path) == {"a": 100.0}  # not before WRITE_EVERY_S
    record.flush(10.0)
    assert read_uses(tmp_path) == {"a": 200.0}
    record.used("b", 300.0)
    record.flush(11.0, force=True)  # at stop
    assert read_uses(tmp_path) == {"a": 200.0, "b": 300.0}
    assert [p.name for p in tmp_path.iterdir()] == [".key_use.3.json"] and lines == []


def test_a_use_record_that_cannot_be_written_warns_once(tmp_path: Path) -> None:
    lines: list[str] = []
    record = UseRecord(use_file(tmp_path / "missing", "0"), lines.append)
    for t in (0.0, 10.0, 20.0):
        record.used("a", t)
        record.flush(t)
    assert len(lines) == 1 and "cannot record the keys' last use" in lines[0] and "Serving goes on" in lines[0]


def test_a_change_to_the_file_applies_from_the_next_request_on_without_waiting_for_a_poll(tmp_path: Path) -> None:
    """Every worker checks the file's identity on each request (one stat), so a revoked key is
    refused by the very next request on every worker, not only by the one whose poll came first."""
    from embed_launcher.gateway.keystore import KeyStore

    path = tmp_path / "keys.toml"
    path.write_text(render_entry(KeyEntry("old", hash_key("k-old"))), encoding="utf-8")
    lines: list[str] = []
    store = KeyStore("k-default", "k-default", path, say=lines.append)
    assert store.decide({"authorization": "Bearer k-old"}, "embed").status == 200
    replacement = tmp_path / "keys.toml.new"
    replacement.write_text(render_entry(KeyEntry("new", hash_key("k-new"))), encoding="utf-8")
    replacement.replace(path)  # as embed_manage and a Kubernetes Secret do: a new file swapped in
    assert store.decide({"authorization": "Bearer k-old"}, "embed").status == 401
    assert store.decide({"authorization": "Bearer k-new"}, "embed").status == 200
    assert lines[-1].endswith("1 key in force (new)")
