"""The gateway with three models behind it, seen by real clients and by raw requests in their exact shapes."""

from __future__ import annotations

import cohere
import httpx
import openai
import pytest
from gateway_harness import CREATED, EMBED_KEY, RERANK_KEY, Stack, auth, requests_received, stack  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration
DOCS = ["Paris is the capital of France.", "AI is artificial intelligence.", "Bananas are yellow."]


def client(stack: Stack) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=stack.gateway.url("/v1"), api_key=EMBED_KEY, max_retries=0, timeout=20)


# OpenAI: embeddings routed by model, and the model list -------------------------------------------
def requests_seen(stack: Stack) -> dict[str, int]:  # noqa: F811
    """Each stand-in's `te_request_count` (public /metrics): who actually served."""
    return {tei.name: requests_received(tei) for tei in stack.teis}


@pytest.mark.parametrize(("asked", "served"), [("small", "BAAI/bge-small-en-v1.5"), ("BAAI/bge-m3", "BAAI/bge-m3"),
                                               ("BAAI/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
                                               (None, "BAAI/bge-small-en-v1.5")])
def test_openai_embeddings_reach_the_model_asked_for(stack: Stack, asked: str | None,  # noqa: F811
                                                     served: str) -> None:
    """Only the named model's TEI serves; the vectors are its; `model` echoes the name asked (or the default's)."""
    before = requests_seen(stack)
    result = (client(stack).embeddings.create(model=asked, input=["first text", "second text"]) if asked else
              client(stack).with_options().embeddings.create(model=openai.NOT_GIVEN,  # type: ignore[arg-type]
                                                            input=["first text", "second text"]))
    after = requests_seen(stack)
    assert {name for name in after if after[name] != before[name]} == {served}
    direct = httpx.post(next(t for t in stack.teis if t.name == served).url + "/embed",
                        json={"inputs": ["first text", "second text"]}, headers=auth()).json()
    assert result.model == (asked or served)
    assert [d.index for d in result.data] == [0, 1]
    for got, want in zip(result.data, direct, strict=True):  # the client asks for base64 (float32)
        assert got.embedding == pytest.approx(want, abs=1e-6)


def test_an_unknown_model_is_404_listing_the_available_names(stack: Stack) -> None:  # noqa: F811
    with pytest.raises(openai.NotFoundError) as caught:
        client(stack).embeddings.create(model="gpt-4", input="x")
    body = caught.value.response.json()
    assert body["error"]["code"] == "model_not_found"
    assert "small" in body["error"]["message"] and "BAAI/bge-m3" in body["error"]["message"]


def test_models_list_and_retrieve(stack: Stack) -> None:  # noqa: F811
    """OpenAI's list shape plus `kind`; retrieve works with the client's %2F and with a raw slash."""
    models = client(stack).models.list()
    assert [(m.id, m.kind, m.created, m.object) for m in models.data] == [  # type: ignore[attr-defined]
        ("BAAI/bge-small-en-v1.5", "embed", CREATED, "model"), ("BAAI/bge-m3", "embed", CREATED, "model"),
        ("naver/splade", "sparse", CREATED, "model"), ("BAAI/bge-reranker-v2-m3", "rerank", CREATED, "model")]
    assert client(stack).models.retrieve("BAAI/bge-m3").id == "BAAI/bge-m3"
    raw = httpx.get(stack.gateway.url("/v1/models/BAAI/bge-reranker-v2-m3"), headers=auth())
    assert raw.json()["kind"] == "rerank"
    with pytest.raises(openai.NotFoundError):
        client(stack).models.retrieve("nope")


def test_base64_embeddings_pass_through(stack: Stack) -> None:  # noqa: F811
    result = client(stack).embeddings.create(model="BAAI/bge-m3", input=["a", "b"], encoding_format="base64")
    assert len(result.data) == 2 and result.model == "BAAI/bge-m3"


# Cohere: the real v1 and v2 clients ----------------------------------------------------------------
def test_cohere_v1_client_reranks(stack: Stack) -> None:  # noqa: F811
    co = cohere.Client(api_key=RERANK_KEY, base_url=stack.gateway.url(), timeout=20)
    result = co.rerank(model="reranker", query="What is AI?", documents=DOCS, top_n=2, return_documents=True)
    assert [r.index for r in result.results] == [1, 0]
    assert result.results[0].document is not None and result.results[0].document.text == DOCS[1]
    assert 0 < result.results[1].relevance_score < result.results[0].relevance_score < 1


def test_cohere_v2_client_reranks_on_the_rerank_port(stack: Stack) -> None:  # noqa: F811
    co = cohere.ClientV2(api_key=RERANK_KEY, base_url=stack.gateway.url(port_index=1), timeout=20)
    result = co.rerank(model="BAAI/bge-reranker-v2-m3", query="What is AI?", documents=DOCS)
    assert result.results[0].index == 1 and len(result.results) == 3


def test_cohere_scores_are_teis_default_sigmoid_scores(stack: Stack) -> None:  # noqa: F811
    cohere_shape = httpx.post(stack.gateway.url("/v1/rerank"), headers=auth(RERANK_KEY),
                              json={"query": "What is AI?", "documents": DOCS}).json()
    native = httpx.post(stack.reranker.url + "/rerank", headers=auth(RERANK_KEY),
                        json={"query": "What is AI?", "texts": DOCS}).json()
    assert [(r["index"], r["relevance_score"]) for r in cohere_shape["results"]] == [
        (r["index"], r["score"]) for r in native]
    assert cohere_shape["model"] == "BAAI/bge-reranker-v2-m3"  # no model asked: the default's name


# raw requests in the shapes real RAG clients send ----------------------------------------------
def test_open_webui_external_reranker(stack: Stack) -> None:  # noqa: F811
    """Open WebUI posts {model, query, documents, top_n} to the full URL it is given (…/v1/rerank)."""
    r = httpx.post(stack.gateway.url("/v1/rerank", 1), headers={**auth(RERANK_KEY), "Content-Type": "application/json"},
                   json={"model": "reranker", "query": "What is AI?", "documents": DOCS, "top_n": len(DOCS)})
    assert r.status_code == 200 and {x["index"] for x in r.json()["results"]} == {0, 1, 2}


def test_ragflow_openai_compatible_rerank_posts_cohere_shape_to_slash_rerank(stack: Stack) -> None:  # noqa: F811
    r = httpx.post(stack.gateway.url("/rerank", 1), headers=auth(RERANK_KEY),
                   json={"model": "BAAI/bge-reranker-v2-m3", "query": "What is AI?", "documents": DOCS, "top_n": 3})
    assert r.status_code == 200 and r.json()["results"][0]["index"] == 1


def test_ragflow_tei_provider_sends_no_key(stack: Stack) -> None:  # noqa: F811
    """RAGFlow's TEI rerank provider posts TEI's shape without a key: 401 while reranker auth is on."""
    body = {"query": "What is AI?", "texts": DOCS, "raw_scores": False, "truncate": True}
    assert httpx.post(stack.gateway.url("/rerank", 1), json=body).status_code == 401
    r = httpx.post(stack.gateway.url("/rerank", 1), json=body, headers=auth(RERANK_KEY))
    assert r.status_code == 200 and r.json()[0]["index"] == 1 and "score" in r.json()[0]


def test_dify_tei_provider(stack: Stack) -> None:  # noqa: F811
    """Dify reads /info per server URL, embeds through /v1/embeddings without a model, reranks with return_text.

    A server URL of `…/models/{name}` points Dify at any model, /info included.
    """
    base = stack.gateway.url("/models/BAAI/bge-m3")
    info = httpx.get(base + "/info", headers=auth()).json()
    assert info["served_model_name"] == "BAAI/bge-m3" and "embedding" in info["model_type"]
    tokens = httpx.post(base + "/tokenize", json={"inputs": ["hello world"]}, headers=auth()).json()
    assert len(tokens) == 1
    embedded = httpx.post(base + "/v1/embeddings", json={"input": ["a", "b"]}, headers=auth()).json()
    assert embedded["model"] == "BAAI/bge-m3" and len(embedded["data"]) == 2
    rerank_base = stack.gateway.url(port_index=1)
    assert "reranker" in httpx.get(rerank_base + "/info", headers=auth(RERANK_KEY)).json()["model_type"]
    ranked = httpx.post(rerank_base + "/rerank", headers=auth(RERANK_KEY),
                        json={"query": "What is AI?", "texts": DOCS, "return_text": True}).json()
    assert ranked[0] == {"index": 1, "text": DOCS[1], "score": ranked[0]["score"]}


def test_llamaindex_tei_shapes(stack: Stack) -> None:  # noqa: F811
    """LlamaIndex: /embed {inputs, truncate}; /rerank {query, texts, truncate, raw_score, return_text}."""
    vectors = httpx.post(stack.gateway.url("/embed"), headers=auth(),
                         json={"inputs": ["a", "b"], "truncate": True}).json()
    assert len(vectors) == 2 and len(vectors[0]) == 384
    ranked = httpx.post(stack.gateway.url("/rerank"), headers=auth(RERANK_KEY),
                        json={"query": "What is AI?", "texts": DOCS, "truncate": True, "raw_score": False,
                              "return_text": False}).json()
    assert ranked[0]["index"] == 1


def test_sparse_model_by_default_and_by_name(stack: Stack) -> None:  # noqa: F811
    by_default = httpx.post(stack.gateway.url("/embed_sparse"), json={"inputs": "hello"}, headers=auth()).json()
    by_name = httpx.post(stack.gateway.url("/models/naver/splade/embed_sparse"), json={"inputs": "hello"},
                         headers=auth()).json()
    assert by_default == by_name and "index" in by_default[0][0]
