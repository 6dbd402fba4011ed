"""Inference endpoints of the TEI stand-in, one function per TEI handler, plus the route table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from fake_tei import model as fm
from fake_tei.api import SERVER_FILE, SERVER_TARGET, ApiError, Engine, Timing
from fake_tei.log import WARN, Span
from fake_tei.schema import Body, is_ids

PREDICT_EXPECTING = ("a string, a pair of strings [string, string] or a batch of mixed strings and pairs "
                     "[[string], [string, string], ...]")


def embed(engine: Engine, body: Body, timing: Timing) -> object:
    is_batch, items = body.inputs("inputs")
    normalize = bool(body.boolean("normalize", True))
    dims = body.usize("dimensions")
    truncate, direction, prompt = engine.request_options(body)
    timing.success = engine.requested("batch" if is_batch else "single")
    if is_batch:
        engine.check_batch(len(items), 657)
    if engine.info.pooling == "splade" and normalize:
        raise ApiError("Backend", "Backend error: `normalize` is not available for SPLADE models", 242, core=True)
    return engine.pooled(items, truncate, direction, prompt, normalize, dims, timing)


def openai_embed(engine: Engine, body: Body, timing: Timing) -> object:
    is_batch, items = body.inputs("input")
    model = body.string("model")
    encoding = body.choice("encoding_format", {"float": "float", "base64": "base64"}, "float")
    dims = body.usize("dimensions")
    served = engine.info.served_model_name
    timing.success = engine.requested("batch" if is_batch else "single")
    if model is not None and model != served:
        engine.logger.log(WARN, SERVER_TARGET, SERVER_FILE, 1161, f"The provided `model={model}` has not been "
                          "found, the `model` parameter should be provided either empty or with "
                          f"`model={served}` instead.", Span("openai_embed"))
    if is_batch:
        engine.check_batch(len(items), 1233)
    vectors = engine.pooled(items, engine.info.auto_truncate, "right", None, True, dims, timing)
    data = [{"object": "embedding", "embedding": fm.b64_vector(v) if encoding == "base64" else v, "index": i}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": served,
            "usage": {"prompt_tokens": timing.tokens, "total_tokens": timing.tokens}}


def _scores(engine: Engine, pairs: list[tuple[str, str]], truncate: bool, direction: str, raw: bool,
            timing: Timing) -> list[fm.F32]:
    engine.acquire(len(pairs))
    try:
        if not engine.info.is_reranker:
            raise ApiError("Backend", "Backend error: Model is not a classifier model", 210)
        engine.metrics.counter("te_predict_count", len(pairs))
        tokens = [len(engine.encode(f"{query} {text}", truncate, direction, None, timing)) for query, text in pairs]
        engine.sleep(engine.delay_s)
        engine.run_batch(tokens, timing, classifier=True)
        logits = [fm.relevance_logit(q, t) for q, t in pairs]
        return [fm.f32(x if raw else fm.sigmoid(x)) for x in logits]
    finally:
        engine.release(len(pairs))


def rerank(engine: Engine, body: Body, timing: Timing) -> object:
    query = str(body.string("query", optional=False))
    texts = body.string_list("texts")
    truncate, direction, _ = engine.request_options(body)
    raw_scores = bool(body.boolean("raw_scores", False))
    return_text = bool(body.boolean("return_text", False))
    if not texts:
        raise ApiError("Empty", "`texts` cannot be empty", 322)
    if not engine.info.is_reranker:
        raise ApiError("Backend", "Backend error: model is not a re-ranker model", 344)
    timing.success = engine.requested("batch")
    engine.check_batch(len(texts), 386)
    scores = _scores(engine, [(query, t) for t in texts], truncate, direction, raw_scores, timing)
    order = sorted(range(len(scores)), key=lambda i: scores[i])[::-1]  # TEI: stable ascending sort, reversed
    return [{"index": i, **({"text": texts[i]} if return_text else {}), "score": scores[i]} for i in order]


def _predict_inputs(body: Body) -> tuple[bool, list[tuple[str, str]]]:
    raw = body.required("inputs")
    if isinstance(raw, str):
        return False, [(raw, "")]
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, str) for v in raw):
        return False, [(raw[0], raw[1])]
    if isinstance(raw, list) and all(isinstance(v, list) and len(v) in (1, 2) and all(isinstance(s, str) for s in v)
                                     for v in raw):
        return True, [(v[0], v[1] if len(v) == 2 else "") for v in raw]
    body.fail("inputs", f"invalid type: {'sequence' if isinstance(raw, list) else 'map'}, expected {PREDICT_EXPECTING}")
    raise AssertionError


def predict(engine: Engine, body: Body, timing: Timing) -> object:
    is_batch, pairs = _predict_inputs(body)
    truncate, direction, _ = engine.request_options(body)
    raw_scores = bool(body.boolean("raw_scores", False))
    if is_batch:
        timing.success = engine.requested("batch")
    else:  # TEI counts a single prediction's te_request_count twice and never its success (server.rs L177, L185)
        engine.requested("single", 2)
    if is_batch:
        engine.check_batch(len(pairs), 210)
    scores = _scores(engine, pairs, truncate, direction, raw_scores, timing)
    results = [[{"score": s, "label": "LABEL_0"}] for s in scores]
    return results if is_batch else results[0]


def tokenize(engine: Engine, body: Body, timing: Timing) -> object:
    raw = body.required("inputs")
    if not (isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(v, str) for v in raw))):
        body.fail("inputs", "data did not match any variant of untagged enum TokenizeInput")
    add_special = bool(body.boolean("add_special_tokens", True))
    texts = [raw] if isinstance(raw, str) else list(raw)
    if isinstance(raw, list):
        if not texts:
            raise ApiError("Empty", "`inputs` cannot be empty", 1393)
        engine.check_batch(len(texts), 1409)
    return [fm.tokenize(t, add_special) for t in texts]


def decode(engine: Engine, body: Body, timing: Timing) -> object:
    raw = body.required("ids")
    # serde's untagged InputIds: Single(Vec<u32>), else Batch(Vec<Vec<u32>>), else neither
    if is_ids(raw):
        batch = [raw]
    elif isinstance(raw, list) and all(is_ids(v) for v in raw):
        batch = cast("list[list[int]]", raw)
        engine.check_batch(len(batch), 1489)
    else:
        body.fail("ids", "data did not match any variant of untagged enum InputIds")
    if not batch or not all(batch):
        raise ApiError("Empty", "Input validation error: `input_ids` cannot be empty", 1473)
    skip = bool(body.boolean("skip_special_tokens", True))
    return [fm.decode(ids, skip) for ids in batch]


def similarity(engine: Engine, body: Body, timing: Timing) -> object:
    inputs = body.required("inputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("source_sentence"), str) or not (
            isinstance(inputs.get("sentences"), list) and all(isinstance(s, str) for s in inputs["sentences"])):
        body.fail("inputs", "missing or invalid field `source_sentence` or `sentences`")
    sentences = list(inputs["sentences"])
    if not sentences:
        raise ApiError("Empty", "`inputs.sentences` cannot be empty", 508)
    engine.check_batch(len(sentences) + 1, 524)
    timing.success = engine.requested("batch")  # TEI calls its embed handler with a batch
    vectors = engine.pooled([inputs["source_sentence"]] + sentences,
                            engine.info.auto_truncate, "right", None, True, None, timing)
    return [fm.cosine(vectors[0], v) for v in vectors[1:]]


def embed_all(engine: Engine, body: Body, timing: Timing) -> object:
    """Per-token vectors: one unnormalised vector per token of each input."""
    is_batch, items = body.inputs("inputs")
    truncate, direction, prompt = engine.request_options(body)
    timing.success = engine.requested("batch" if is_batch else "single")
    if is_batch:
        engine.check_batch(len(items), 1022)
    engine.pooled(items, truncate, direction, prompt, False, None, timing)  # same checks as /embed
    return [[fm.vector([token], False) for token in fm.token_ids(item)] for item in items]


def embed_sparse(engine: Engine, body: Body, timing: Timing) -> object:
    """SPLADE output; only models served with `--pooling splade` have it."""
    is_batch, items = body.inputs("inputs")
    truncate, direction, prompt = engine.request_options(body)
    timing.success = engine.requested("batch" if is_batch else "single")
    if is_batch:
        engine.check_batch(len(items), 844)
    if engine.info.pooling != "splade":
        raise ApiError("Backend", "Backend error: Model is not an embedding model with SPLADE pooling", 828)
    engine.pooled(items, truncate, direction, prompt, False, None, timing)
    return [[{"index": t, "value": fm.f32(1.0 + t % 7 / 10)} for t in sorted(set(fm.token_ids(item)))]
            for item in items]


@dataclass(frozen=True)
class Endpoint:
    """One POST route: handler, Rust request struct, span name and the line of its `Success` log."""

    handler: Callable[[Engine, Body, Timing], object]
    struct: str
    span: str
    success_line: int | None
    openai: bool = False


EMBED = Endpoint(embed, "EmbedRequest", "embed", 737)
RERANK = Endpoint(rerank, "RerankRequest", "rerank", 471)
PREDICT = Endpoint(predict, "PredictRequest", "predict", 277)
POST_ROUTES = {
    "/embed": EMBED,
    "/rerank": RERANK,
    "/predict": PREDICT,
    "/similarity": Endpoint(similarity, "SimilarityRequest", "similarity", 737),
    "/embed_all": Endpoint(embed_all, "EmbedAllRequest", "embed_all", 1100),
    "/embed_sparse": Endpoint(embed_sparse, "EmbedSparseRequest", "embed_sparse", 923),
    "/tokenize": Endpoint(tokenize, "TokenizeRequest", "tokenize", None),
    "/decode": Endpoint(decode, "DecodeRequest", "decode", None),
    "/embeddings": Endpoint(openai_embed, "OpenAICompatRequest", "openai_embed", 1318, openai=True),
    "/v1/embeddings": Endpoint(openai_embed, "OpenAICompatRequest", "openai_embed", 1318, openai=True),
}


def default_route(engine: Engine) -> Endpoint:
    """What `POST /` and `POST /invocations` serve: rerank for rerankers, embed otherwise."""
    return RERANK if engine.info.is_reranker else EMBED
