"""Every client unchanged (issue 18): the real cohere, ollama, openai, langchain-openai and llama-index clients
against the gateway in front of TEI stand-ins, each checked against TEI's own answer for the same input.

The stand-ins cut batches at 4 inputs (``BATCH``), so every multi-input request here is split and merged.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import ollama
import openai
import pytest
from gateway_harness import EMBED_KEY, Gateway, Stack, auth, make_teis, stack_models, start_gateway, stop_stack

from embed_launcher.gateway import tokens

pytestmark = pytest.mark.integration
BATCH = 4
TEXTS = [f"text number {i} about embeddings and search" for i in range(10)]
PROMPTS = {"query": "query: ", "passage": "passage: "}  # the small model's Sentence Transformers prompts


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiktoken's cache, seeded offline from bpe-openai's files (no test may reach the internet)."""
    directory = tmp_path_factory.mktemp("tiktoken")
    assert "cl100k_base" in tokens.seed(directory)
    return directory


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiktoken_cache: Path) -> Iterator[tuple[Stack, Gateway]]:
    """Four stand-ins (the small model has prompts, bge-m3 none) behind two gateways: the default one
    (EMBED_TOKEN_INPUT=reject) and one that decodes tiktoken ids."""
    tmp = tmp_path_factory.mktemp("dialects")
    teis = make_teis(tmp, batch=BATCH)
    teis[0].prompts = PROMPTS
    for tei in teis:
        tei.start()
    for tei in teis:
        tei.wait_ready()
    small, m3, splade, reranker = teis
    running = Stack(small, m3, splade, reranker, start_gateway(tmp, stack_models(*teis)))
    decoding = None
    try:
        running.gateway.wait_healthy()
        decoding = start_gateway(tmp, stack_models(*teis), token_input="decode",
                                 env={"TIKTOKEN_CACHE_DIR": str(tiktoken_cache)})
        decoding.wait_healthy()
        yield running, decoding
    finally:
        if decoding is not None:
            decoding.stop()
        stop_stack(running)


def flat(vectors: list[list[float]] | None) -> list[float]:
    """pytest.approx compares flat lists only."""
    assert vectors is not None
    return [v for vector in vectors for v in vector]


def direct(stack: Stack, texts: list[str], tei: str = "small", **options: Any) -> list[list[float]]:
    """TEI's own vectors, one input per request (no batching on the way)."""
    server = stack.small if tei == "small" else stack.m3
    out = []
    for text in texts:
        answer = httpx.post(server.url + "/embed", json={"inputs": text, **options}, headers=auth(), timeout=20)
        assert answer.status_code == 200, answer.text
        out.append(answer.json()[0])
    return out


# Cohere embed ---------------------------------------------------------------------------------------
def int8_reference(vector: list[float]) -> list[int]:
    """docs/api.md's rule, written again here: r = min(1, 8/sqrt(d)); round(v / r * 127), half up, clipped."""
    r = min(1.0, 8 / math.sqrt(len(vector)))
    return [min(127, max(-128, math.floor(v / r * 127 + 0.5))) for v in vector]


def ubinary_reference(vector: list[float]) -> list[int]:
    bits = "".join("1" if v > 0 else "0" for v in vector)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def test_cohere_v2_embed_every_type_from_the_float_vector(stack: tuple[Stack, Gateway]) -> None:
    """ClientV2.embed with all six types, through a split batch: float is TEI's vector; int8, uint8, binary,
    ubinary and base64 are what the documented rules make of it."""
    running, _ = stack
    co = cohere.ClientV2(api_key=EMBED_KEY, base_url=running.gateway.url(), timeout=20)
    result = co.embed(model="BAAI/bge-m3", texts=TEXTS, input_type="search_document",
                      embedding_types=["float", "int8", "uint8", "binary", "ubinary", "base64"])
    want = direct(running, TEXTS, "m3")
    got = result.embeddings
    assert got.float_ is not None and len(got.float_) == len(TEXTS)
    for vector, reference in zip(got.float_, want, strict=True):
        assert vector == pytest.approx(reference, abs=1e-6)
    assert got.int8 == [int8_reference(v) for v in want]
    assert got.uint8 == [[min(255, max(0, math.floor((v / min(1.0, 8 / math.sqrt(len(w))) + 1) * 127.5 + 0.5)))
                          for v in w] for w in want]
    assert got.ubinary == [ubinary_reference(v) for v in want]
    assert got.binary == [[b - 128 for b in ubinary_reference(v)] for v in want]
    assert len(got.binary[0]) == 384 // 8
    assert got.base64 is not None
    for encoded, reference in zip(got.base64, want, strict=True):
        raw = base64.b64decode(encoded)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(reference, abs=1e-6)
    assert result.meta is not None and result.meta.billed_units is not None
    assert (result.meta.billed_units.input_tokens or 0) > len(TEXTS)
    assert result.meta.warnings  # bge-m3 has no prompts: search_document went without one, and it says so
    assert "search_document" in result.meta.warnings[0]


def test_cohere_input_type_is_the_models_prompt(stack: tuple[Stack, Gateway]) -> None:
    """search_query → the small model's `query` prompt (its vectors, not the bare text's); no warning."""
    running, _ = stack
    co = cohere.ClientV2(api_key=EMBED_KEY, base_url=running.gateway.url(), timeout=20)
    for input_type, prompt in (("search_query", "query"), ("search_document", "passage")):
        result = co.embed(model="small", texts=TEXTS[:5], input_type=input_type, embedding_types=["float"])
        got = result.embeddings.float_
        assert got is not None
        for vector, want, bare in zip(got, direct(running, TEXTS[:5], prompt_name=prompt), direct(running, TEXTS[:5]),
                                      strict=True):
            assert vector == pytest.approx(want, abs=1e-6) and vector != pytest.approx(bare, abs=1e-6)
        assert not (result.meta and result.meta.warnings)


def test_cohere_input_type_without_a_prompt_says_so(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    co = cohere.ClientV2(api_key=EMBED_KEY, base_url=running.gateway.url(), timeout=20)
    for _ in range(2):  # the second time the gateway remembers: the same answer
        result = co.embed(model="small", texts=TEXTS[:2], input_type="clustering", embedding_types=["float"])
        assert flat(result.embeddings.float_) == pytest.approx(flat(direct(running, TEXTS[:2])), abs=1e-6)
        assert result.meta is not None and result.meta.warnings and "clustering" in result.meta.warnings[0]


def test_cohere_v1_client_gets_floats(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    co = cohere.Client(api_key=EMBED_KEY, base_url=running.gateway.url(), timeout=20)
    result = co.embed(texts=TEXTS[:6], model="BAAI/bge-m3")
    assert result.response_type == "embeddings_floats"
    assert flat(result.embeddings) == pytest.approx(flat(direct(running, TEXTS[:6], "m3")), abs=1e-6)


def test_cohere_truncate_maps_to_teis(stack: tuple[Stack, Gateway]) -> None:
    """NONE: TEI's error for a too-long input (in OpenAI's shape); START and END: TEI's truncation, left and right."""
    running, _ = stack
    long = " ".join(f"w{i}" for i in range(700))  # over the stand-in's 512 tokens
    url, headers = running.gateway.url("/v2/embed"), auth()
    body = {"model": "BAAI/bge-m3", "texts": [long], "embedding_types": ["float"]}
    refused = httpx.post(url, json={**body, "truncate": "NONE"}, headers=headers, timeout=20)
    assert refused.status_code in (413, 422) and "tokens" in refused.json()["error"]["message"]
    for truncate, direction in (("START", "left"), ("END", "right")):
        answer = httpx.post(url, json={**body, "truncate": truncate}, headers=headers, timeout=20)
        assert answer.status_code == 200, answer.text
        want = direct(running, [long], "m3", truncate=True, truncation_direction=direction)
        assert flat(answer.json()["embeddings"]["float"]) == pytest.approx(flat(want), abs=1e-6)


@pytest.mark.parametrize(("body", "status", "word"), [
    ({"texts": ["a"], "embedding_types": ["float16"]}, 422, "embedding_types"),
    ({"texts": ["a"], "truncate": "MIDDLE"}, 422, "truncate"),
    ({"texts": []}, 422, "texts"),
    ({"inputs": [{"content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 422, "images"),
    ({"texts": ["a"], "model": "nope"}, 404, "nope"),
    ({"texts": [""]}, 400, "empty"),
])
def test_cohere_embed_errors_in_its_shape(stack: tuple[Stack, Gateway], body: dict[str, Any], status: int,
                                          word: str) -> None:
    running, _ = stack
    co = cohere.ClientV2(api_key=EMBED_KEY, base_url=running.gateway.url(), timeout=20)
    answer = httpx.post(running.gateway.url("/v2/embed"), json=body, headers=auth(), timeout=20)
    assert answer.status_code == status, answer.text
    assert word in answer.json()["error"]["message"]
    if "texts" in body and body["texts"] and "model" not in body and "truncate" not in body:
        with pytest.raises(cohere.core.api_error.ApiError) as caught:
            co.embed(model="small", texts=body["texts"], input_type="search_query",
                     embedding_types=body.get("embedding_types", ["float"]))
        assert caught.value.status_code == status


def test_cohere_v2_inputs_are_read_as_texts(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    body = {"model": "BAAI/bge-m3", "inputs": [{"content": [{"type": "text", "text": t}]} for t in TEXTS[:3]],
            "embedding_types": ["float"]}
    answer = httpx.post(running.gateway.url("/v2/embed"), json=body, headers=auth(), timeout=20).json()
    assert answer["texts"] == TEXTS[:3]
    assert flat(answer["embeddings"]["float"]) == pytest.approx(flat(direct(running, TEXTS[:3], "m3")), abs=1e-6)


# Ollama ---------------------------------------------------------------------------------------------
def ollama_client(running: Stack) -> ollama.Client:
    return ollama.Client(host=running.gateway.url(), headers=auth(), timeout=20)


def test_ollama_embed_embeddings_and_list(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    client = ollama_client(running)
    embedded = client.embed(model="small", input=TEXTS)
    assert embedded.model == "small"
    assert flat([list(v) for v in embedded.embeddings]) == pytest.approx(flat(direct(running, TEXTS)), abs=1e-6)
    one = client.embeddings(model="BAAI/bge-m3:latest", prompt=TEXTS[0])
    assert list(one.embedding) == pytest.approx(direct(running, TEXTS[:1], "m3")[0], abs=1e-6)
    names = [m.model for m in client.list().models]
    assert names == ["BAAI/bge-small-en-v1.5", "small", "BAAI/bge-m3"]  # embedding models only, every name
    shown = client.show("small")
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo is not None and shown.modelinfo["embedding_length"] == 384


def test_ollama_version_is_public(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    answer = httpx.get(running.gateway.url("/api/version"), timeout=10)
    assert answer.status_code == 200 and answer.json()["version"]
    assert httpx.get(running.gateway.url("/api/tags"), timeout=10).status_code == 401  # the list needs the key


def test_ollama_errors_in_its_shape(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    client = ollama_client(running)
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="nope", input="a")
    assert caught.value.status_code == 404 and "nope" in caught.value.error
    with pytest.raises(ollama.ResponseError) as empty:
        client.embed(model="small", input=[""])
    assert empty.value.status_code == 400 and "empty" in empty.value.error
    bad = httpx.post(running.gateway.url("/api/embed"), json={"model": "small", "input": 3}, headers=auth())
    assert bad.status_code == 400 and "`input`" in bad.json()["error"]


# OpenAI: dimensions and base64 through a split batch; the model list ---------------------------------
def test_openai_dimensions_and_base64_through_a_split_batch(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    client = openai.OpenAI(base_url=running.gateway.url("/v1"), api_key=EMBED_KEY, max_retries=0, timeout=20)
    result = client.embeddings.create(model="small", input=TEXTS, dimensions=128, encoding_format="base64")
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    for item, want in zip(result.data, direct(running, TEXTS, dimensions=128), strict=True):
        raw = base64.b64decode(str(item.embedding))  # asked for base64, the client hands the text back
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(want, abs=1e-6) and len(want) == 128
    with pytest.raises(openai.UnprocessableEntityError):  # above the model's size: TEI's validation error
        client.embeddings.create(model="small", input=TEXTS, dimensions=4096)


def test_models_carry_dimensions_and_input_length(stack: tuple[Stack, Gateway]) -> None:
    running, _ = stack
    models = httpx.get(running.gateway.url("/v1/models"), headers=auth(), timeout=20).json()["data"]
    by_id = {m["id"]: m for m in models}
    assert by_id["BAAI/bge-m3"]["dimensions"] == 384 and by_id["BAAI/bge-m3"]["max_input_length"] == 512
    assert by_id["BAAI/bge-reranker-v2-m3"]["max_input_length"] == 512
    assert "dimensions" not in by_id["BAAI/bge-reranker-v2-m3"]


# Token ids: langchain-openai's defaults -------------------------------------------------------------
def langchain(url: str) -> Any:
    from langchain_openai import OpenAIEmbeddings

    return OpenAIEmbeddings(model="small", base_url=url, api_key=EMBED_KEY, max_retries=0)  # type: ignore[arg-type]


def test_langchain_token_ids_are_refused_by_default(stack: tuple[Stack, Gateway], tiktoken_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAIEmbeddings sends tiktoken ids: a 400 that names the trap and the fix, never wrong vectors."""
    running, _ = stack
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    with pytest.raises(openai.BadRequestError) as caught:
        langchain(running.gateway.url("/v1")).embed_documents(TEXTS[:3])
    message = caught.value.response.json()["error"]["message"]
    assert "check_embedding_ctx_length=False" in message and "EMBED_TOKEN_INPUT" in message
    assert caught.value.response.json()["error"]["code"] == "token_ids_not_accepted"


def test_langchain_token_ids_decoded_embed_the_text(stack: tuple[Stack, Gateway], tiktoken_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """EMBED_TOKEN_INPUT=decode: the same vectors as the text embedded directly."""
    running, decoding = stack
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    vectors = langchain(decoding.url("/v1")).embed_documents(TEXTS)
    assert flat(vectors) == pytest.approx(flat(direct(running, TEXTS)), abs=1e-5)
    texts = langchain(running.gateway.url("/v1"))
    texts.check_embedding_ctx_length = False  # the client-side fix the 400 names: text goes as text
    assert flat(texts.embed_documents(TEXTS[:2])) == pytest.approx(flat(direct(running, TEXTS[:2])), abs=1e-5)


def test_undecodable_ids_are_a_400(stack: tuple[Stack, Gateway]) -> None:
    _, decoding = stack
    answer = httpx.post(decoding.url("/v1/embeddings"), json={"input": [[2**31]], "model": "small"},
                        headers=auth(), timeout=20)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_token_ids"


# LlamaIndex's TEI client ------------------------------------------------------------------------------
def test_llamaindex_tei_client(stack: tuple[Stack, Gateway]) -> None:
    """llama-index-embeddings-text-embeddings-inference 0.6 sends `Authorization: Bearer <key>`."""
    from llama_index.embeddings.text_embeddings_inference import (  # type: ignore[import-untyped]
        TextEmbeddingsInference,
    )

    running, _ = stack
    client = TextEmbeddingsInference(model_name="small", base_url=running.gateway.url(), auth_token=EMBED_KEY,
                                     embed_batch_size=10, timeout=20)
    assert flat(client.get_text_embedding_batch(TEXTS)) == pytest.approx(flat(direct(running, TEXTS)), abs=1e-6)


def test_llamaindex_bare_key_header(stack: tuple[Stack, Gateway]) -> None:
    """Older LlamaIndex TEI clients send the key bare (`Authorization: <key>`, llama_index #17130)."""
    running, _ = stack
    answer = httpx.post(running.gateway.url("/embed"), json={"inputs": TEXTS[:2], "truncate": True},
                        headers={"Authorization": EMBED_KEY}, timeout=20)
    assert answer.status_code == 200


# The worst day: a TEI that dies under a translated request -------------------------------------------
def test_a_tei_dying_inside_a_split_cohere_or_ollama_embed_is_a_502_in_each_shape(tmp_path: Path) -> None:
    """One chunk's TEI drops the connection: the whole request is a 502 (never half the vectors), in
    OpenAI's shape on Cohere's route and TEI's (Ollama's `error`) on Ollama's, and the gateway lives on."""
    import json

    from gateway_harness import RawTei, drop, reply

    def answer(handler: Any, body: bytes) -> None:
        inputs = json.loads(body)["inputs"]
        if "boom" in inputs:
            drop(handler)
        else:
            reply(handler, 200, json.dumps([[0.5, -0.5] for _ in inputs]).encode())

    raw = RawTei(answer)
    gateway = start_gateway(tmp_path, [raw.entry("raw", batch=2)], keys=None)
    try:
        co = cohere.ClientV2(api_key="none", base_url=gateway.url(), timeout=20)
        with pytest.raises(cohere.core.api_error.ApiError) as caught:
            co.embed(model="raw", texts=["a", "b", "boom", "c"], input_type="search_query", embedding_types=["int8"])
        assert caught.value.status_code == 502
        assert "not sent again" in caught.value.body["error"]["message"]
        with pytest.raises(ollama.ResponseError) as dropped:
            ollama.Client(host=gateway.url(), timeout=20).embed(model="raw", input=["a", "b", "boom", "c"])
        assert dropped.value.status_code == 502 and "not sent again" in dropped.value.error
        fine = co.embed(model="raw", texts=["a", "b", "c"], input_type="classification",
                        embedding_types=["ubinary", "int8"])
        assert fine.embeddings.ubinary == [[0b10000000]] * 3
        assert fine.embeddings.int8 == [[64, -63]] * 3  # r = 1 for 2 dimensions; half up: 63.5 → 64, -63.5 → -63
    finally:
        gateway.stop()
        raw.close()
