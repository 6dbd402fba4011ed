"""The keys file through a real gateway: 403 and 429 in each route's shape, changes applied without a
restart under load, a broken file refused while the old keys keep working, SIGHUP."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import wait_until
from gateway_harness import EMBED_KEY, RERANK_KEY, Stack, start_stack, stop_stack

from embed_launcher.gateway.keyfile import KeyEntry, hash_key, render_entry

EMBEDDER, RANKER, LIMITED, RANK_LIMITED = "k-embedder-1", "k-ranker-1", "k-limited-1", "k-rank-limited-1"
BASE_KEYS = (
    KeyEntry("embedder", hash_key(EMBEDDER), ("embed",), ("small",)),
    KeyEntry("ranker", hash_key(RANKER), ("rerank",)),
    KeyEntry("limited", hash_key(LIMITED), rpm=1),
    KeyEntry("rank-limited", hash_key(RANK_LIMITED), ("rerank",), rpm=1),
)
EMBED_BODY = {"input": "hello", "model": "small"}
RERANK_BODY = {"query": "q", "documents": ["a", "b"]}


def write_keys(path: Path, keys: tuple[KeyEntry, ...] | list[KeyEntry], text: str | None = None) -> None:
    """Replace the file atomically, as embed_manage and a Kubernetes Secret update do."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text if text is not None else "\n".join(render_entry(k) for k in keys))
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    tmp = tmp_path_factory.mktemp("keyed")
    path = tmp / "keys.toml"
    write_keys(path, BASE_KEYS)
    stack = start_stack(tmp, env={"EMBED_API_KEYS_FILE": str(path)})
    yield stack, path
    stop_stack(stack)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("path", "body", "shape"), [
    ("/v1/rerank", RERANK_BODY, "openai"),  # Cohere's route: OpenAI's nested error shape
    ("/v2/rerank", RERANK_BODY, "openai"),
    ("/rerank", {"query": "q", "texts": ["a"]}, "tei"),
    ("/v1/embeddings", {"input": "x", "model": "BAAI/bge-m3"}, "openai"),  # a model outside the key's
    ("/embed", {"inputs": "x"}, None),  # the default model is `small`: allowed
    ("/models/BAAI/bge-m3/embed", {"inputs": "x"}, "tei"),
    ("/models/small/embed", {"inputs": "x"}, None),
])
def test_a_key_outside_its_scope_or_models_gets_403_in_the_routes_shape(
        keyed: tuple[Stack, Path], path: str, body: object, shape: str | None) -> None:
    stack, _ = keyed
    answer = httpx.post(stack.gateway.url(path), json=body, headers=bearer(EMBEDDER))
    if shape is None:
        assert answer.status_code == 200, answer.text
        return
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    message = error["message"] if shape == "openai" else error
    if shape == "openai":
        assert (error["type"], error["code"]) == ("permission_error", "forbidden")
    else:
        assert answer.json()["error_type"] == "Validation"  # TEI's enum has no other fit
    assert "embedder" in message and "small" in message  # what the key may use
    assert not any(other in message for other in ("ranker", "limited", "reranker", "splade", EMBEDDER))


def test_a_key_limited_to_some_models_sees_only_those(keyed: tuple[Stack, Path]) -> None:
    """In /v1/models and in the names a 404 lists: never another model."""
    stack, _ = keyed
    listed = httpx.get(stack.gateway.url("/v1/models"), headers=bearer(EMBEDDER)).json()
    assert [m["id"] for m in listed["data"]] == ["BAAI/bge-small-en-v1.5"]
    full = httpx.get(stack.gateway.url("/v1/models"), headers=bearer(EMBED_KEY)).json()
    assert len(full["data"]) == 4  # the default key: every model
    answers = [
        httpx.get(stack.gateway.url("/v1/models/BAAI%2Fbge-m3"), headers=bearer(EMBEDDER)),
        httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": "x", "model": "nope"}, headers=bearer(EMBEDDER)),
        httpx.post(stack.gateway.url("/models/nope/embed"), json={"inputs": "x"}, headers=bearer(EMBEDDER)),
    ]
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert "small" in answer.text, answer.text
        assert "reranker" not in answer.text and "splade" not in answer.text, answer.text
    assert answers[0].text.count("bge-m3") == 1  # only where it repeats the name the client asked for
    assert "bge-m3" not in answers[1].text and "bge-m3" not in answers[2].text


def test_a_key_limited_to_some_models_sees_only_those_in_ollamas_dialect_too(keyed: tuple[Stack, Path]) -> None:
    """/api/tags lists only the key's models; /api/show of another is a 404 naming only those."""
    stack, _ = keyed
    tags = httpx.get(stack.gateway.url("/api/tags"), headers=bearer(EMBEDDER))
    assert tags.status_code == 200, tags.text
    assert "bge-m3" not in tags.text and "small" in tags.text, tags.text
    hidden = httpx.post(stack.gateway.url("/api/show"), json={"model": "BAAI/bge-m3"}, headers=bearer(EMBEDDER))
    assert hidden.status_code == 404, hidden.text
    assert "small" in hidden.text and hidden.text.count("bge-m3") == 1, hidden.text
    shown = httpx.post(stack.gateway.url("/api/show"), json={"model": "small"}, headers=bearer(EMBEDDER))
    assert shown.status_code == 200, shown.text


def test_the_model_list_and_a_permitted_model_pass(keyed: tuple[Stack, Path]) -> None:
    stack, _ = keyed
    assert httpx.get(stack.gateway.url("/v1/models"), headers=bearer(EMBEDDER)).status_code == 200
    answer = httpx.post(stack.gateway.url("/v1/embeddings"), json=EMBED_BODY, headers={"X-API-Key": EMBEDDER})
    assert answer.status_code == 200, answer.text
    assert httpx.post(stack.gateway.url("/v1/rerank"), json=RERANK_BODY, headers={"api-key": RANKER}).status_code == 200


@pytest.mark.parametrize(("key", "path", "body", "shape"), [
    (LIMITED, "/v1/embeddings", EMBED_BODY, "openai"),
    (LIMITED, "/embed", {"inputs": "x"}, "tei"),
    (RANK_LIMITED, "/v1/rerank", RERANK_BODY, "openai"),
])
def test_over_its_rpm_a_key_gets_429_with_retry_after(keyed: tuple[Stack, Path], key: str, path: str,
                                                       body: object, shape: str) -> None:
    stack, _ = keyed
    url = stack.gateway.url(path)
    answers = [httpx.post(url, json=body, headers=bearer(key)) for _ in range(2)]
    refused = answers[-1]  # rpm = 1: the bucket holds one request (an earlier case may have spent it)
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    if shape == "openai":
        assert (refused.json()["error"]["type"], refused.json()["error"]["code"]) == ("rate_limit_error",
                                                                                    "rate_limit_exceeded")
    else:
        assert refused.json()["error_type"] == "Overloaded"
    assert httpx.post(url, json=body, headers=bearer(EMBED_KEY if "embed" in path else RERANK_KEY)).status_code == 200


def test_logs_name_key_ids_never_keys(keyed: tuple[Stack, Path]) -> None:
    stack, path = keyed
    httpx.post(stack.gateway.url("/v1/rerank"), json=RERANK_BODY, headers=bearer(EMBEDDER))
    stack.gateway.wait_for("Refused: POST /v1/rerank: this API key (embedder)")
    output = stack.gateway.output()
    assert f"Keys file {path}: 4 keys in force (embedder, ranker, limited, rank-limited)" in output
    assert not any(secret in output for secret in (EMBEDDER, RANKER, LIMITED, RANK_LIMITED, EMBED_KEY, RERANK_KEY))


class Load:
    """Clients sending requests with each of ``keys`` until stopped; counts answers by key and status."""

    def __init__(self, url: str, keys: list[str], threads_per_key: int = 2) -> None:
        self.url, self.stop = url, threading.Event()
        self.counts: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True)
                        for k in keys for _ in range(threads_per_key)]

    def run(self, key: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    status = client.post(self.url, json=EMBED_BODY, headers=bearer(key)).status_code
                except httpx.HTTPError:
                    status = -1
                with self.lock:
                    self.counts[(key, status)] = self.counts.get((key, status), 0) + 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def count(self, key: str, status: int | None = None) -> int:
        with self.lock:
            return sum(n for (k, s), n in self.counts.items() if k == key and (status is None or s == status))


def status_with(url: str, key: str) -> int:
    return httpx.post(url, json=EMBED_BODY, headers=bearer(key)).status_code


def test_add_use_revoke_and_rotate_under_load_without_a_failed_request(tmp_path: Path) -> None:
    """Keys that stay valid get no failure while others are added, rotated and revoked around them;
    a revoked key gets 401 from the next request on; the default key works throughout."""
    path = tmp_path / "keys.toml"
    stay = KeyEntry("stay", hash_key("k-stay"))
    old = KeyEntry("app-old", hash_key("k-app-old"))
    write_keys(path, [stay, old])
    stack = start_stack(tmp_path, env={"EMBED_API_KEYS_FILE": str(path)}, workers=2)
    try:
        url = stack.gateway.url("/v1/embeddings")
        with Load(url, ["k-stay", EMBED_KEY]) as load:
            wait_until(lambda: load.count("k-stay", 200) > 20, 30)
            new = KeyEntry("app-new", hash_key("k-app-new"), ("embed",), ("small",))
            write_keys(path, [stay, old, new])  # rotation, step 1: the new key next to the old one
            wait_until(lambda: status_with(url, "k-app-new") == 200, 15)
            write_keys(path, [stay, new])  # step 2: the old key revoked
            wait_until(lambda: status_with(url, "k-app-old") == 401, 15)
            for _ in range(20):  # from then on, on every worker: never accepted again
                assert status_with(url, "k-app-old") == 401
            assert status_with(url, "k-app-new") == 200
            before = load.count("k-stay")
            wait_until(lambda: load.count("k-stay") > before + 20, 30)
        for key in ("k-stay", EMBED_KEY):
            assert load.count(key) == load.count(key, 200) > 0, load.counts
    finally:
        stop_stack(stack)


def test_a_broken_file_is_refused_and_the_old_keys_keep_working(keyed: tuple[Stack, Path]) -> None:
    stack, path = keyed
    url = stack.gateway.url("/v1/embeddings")
    good = path.read_text()
    newcomer = KeyEntry("newcomer", hash_key("k-newcomer"))
    broken = good + "\n" + render_entry(newcomer) + 'rpm = "many"\n'
    line = len(good.splitlines()) + 2
    try:
        with Load(url, [EMBEDDER]) as load:
            write_keys(path, [], text=broken)
            stack.gateway.wait_for(f"Error: keys file {path} line {line}: `rpm` must be a whole number")
            assert "the keys file was refused, the previous keys stay in force" in stack.gateway.output()
            assert status_with(url, "k-newcomer") == 401  # nothing of the broken file applies
            assert status_with(url, EMBEDDER) == 200
            wait_until(lambda: load.count(EMBEDDER, 200) > 10, 30)
        assert load.count(EMBEDDER) == load.count(EMBEDDER, 200), load.counts
        refusals = stack.gateway.output().count(f"Error: keys file {path} line {line}")
        assert refusals == 1  # one line per change, not one per poll
        stack.gateway.proc.send_signal(signal.SIGHUP)  # SIGHUP re-reads at once (and says so again)
        wait_until(lambda: stack.gateway.output().count(f"Error: keys file {path} line {line}") == 2, 15)
        assert stack.gateway.proc.poll() is None
    finally:
        write_keys(path, [], text=good)
    wait_until(lambda: stack.gateway.output().count(f"Keys file {path}: 4 keys in force") >= 2, 15)
    assert status_with(url, EMBEDDER) == 200


def test_sighup_reaches_every_worker_and_stops_none(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    write_keys(path, [KeyEntry("one", hash_key("k-one"))])
    stack = start_stack(tmp_path, env={"EMBED_API_KEYS_FILE": str(path)}, workers=2)
    try:
        stack.gateway.wait_for(f"Keys file {path}: 1 key in force (one)")
        wait_until(lambda: stack.gateway.output().count("1 key in force") == 2, 15)  # one line per worker
        stack.gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: stack.gateway.output().count("1 key in force") == 4, 15)
        assert stack.gateway.proc.poll() is None
        assert status_with(stack.gateway.url("/v1/embeddings"), "k-one") == 200
    finally:
        stop_stack(stack)


def test_a_deleted_file_revokes_its_keys_and_keeps_the_default(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    write_keys(path, [KeyEntry("one", hash_key("k-one"))])
    stack = start_stack(tmp_path, env={"EMBED_API_KEYS_FILE": str(path)})
    try:
        url = stack.gateway.url("/v1/embeddings")
        assert status_with(url, "k-one") == 200
        path.unlink()
        wait_until(lambda: status_with(url, "k-one") == 401, 15)
        assert status_with(url, EMBED_KEY) == 200
    finally:
        stop_stack(stack)


def test_the_access_log_names_the_key_id_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    write_keys(path, [KeyEntry("search-app", hash_key("k-search-app"))])
    stack = start_stack(tmp_path, env={"EMBED_API_KEYS_FILE": str(path)}, access_log=True)
    try:
        url = stack.gateway.url("/v1/embeddings")
        assert httpx.post(url, json=EMBED_BODY, headers={"X-API-Key": "k-search-app"}).status_code == 200
        assert httpx.post(url, json=EMBED_BODY, headers=bearer(EMBED_KEY)).status_code == 200
        assert httpx.post(url, json=EMBED_BODY, headers=bearer("wrong")).status_code == 401
        stack.gateway.wait_for('"POST /v1/embeddings HTTP/1.1" 401')
        lines = [line for line in stack.gateway.output().splitlines() if "POST /v1/embeddings" in line]
        assert [line.rsplit(" ", 1)[1] for line in lines] == ["key=search-app", "key=default", "key=-"], lines
        assert not any(secret in stack.gateway.output() for secret in ("k-search-app", EMBED_KEY))
    finally:
        stop_stack(stack)
