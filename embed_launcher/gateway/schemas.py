"""The JSON Schemas of the gateway's bodies, per dialect, for its OpenAPI document (pure data).

TEI's native shapes follow TEI 1.9.3 (router/src/http/types.rs, /work/shared/tei-contract.md §5.4);
The other dialects' follow what the gateway reads and writes (dialects/, batching.py).
"""

from __future__ import annotations

from typing import Any

from embed_launcher.gateway.dialects.cohere import EMBEDDING_TYPES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def obj(properties: dict[str, Schema], *required: str) -> Schema:
    """An object with these properties; others are allowed (TEI and the dialects ignore unknown fields)."""
    return {"type": "object", "properties": properties, "required": list(required)}


STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
NULLABLE_BOOL: Schema = {"type": ["boolean", "null"]}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
COUNT: Schema = {"type": "integer", "minimum": 0}
TOKEN_ID: Schema = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
DIRECTION: Schema = {"type": "string", "enum": ["Right", "right", "Left", "left"]}
TEI_ERROR_TYPES = ["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]
# The options every TEI inference request takes (types.rs: truncate, truncation_direction, prompt_name).
TEI_OPTIONS: dict[str, Schema] = {"truncate": NULLABLE_BOOL, "truncation_direction": DIRECTION,
                                  "prompt_name": NULLABLE_STRING}

ERRORS: dict[str, Schema] = {
    "TeiError": obj({"error": STRING, "error_type": {"type": "string", "enum": TEI_ERROR_TYPES}},
                    "error", "error_type"),
    "OpenAIError": obj({"error": obj({"message": STRING, "type": STRING, "code": {"type": ["string", "integer",
                                                                                            "null"]}},
                                     "message", "type")}, "error"),
}

REQUESTS: dict[str, Schema] = {
    # TEI's untagged `Input`: a string, ONE token-id list, or a batch of strings and token-id lists.
    "Input": {"anyOf": [STRING, array(TOKEN_ID), array({"anyOf": [STRING, array(TOKEN_ID)]})]},
    "EmbedRequest": obj({"inputs": ref("Input"), "normalize": BOOLEAN, "dimensions": {"type": ["integer", "null"],
                                                                                        "minimum": 0},
                         **TEI_OPTIONS}, "inputs"),
    "EmbedAllRequest": obj({"inputs": ref("Input"), **TEI_OPTIONS}, "inputs"),
    "RerankRequest": obj({"query": STRING, "texts": array(STRING), "raw_scores": BOOLEAN, "return_text": BOOLEAN,
                          **TEI_OPTIONS}, "query", "texts"),
    "PredictRequest": obj({"inputs": {"anyOf": [STRING, array(STRING, minItems=2, maxItems=2),
                                                array(array(STRING, minItems=1, maxItems=2))]},
                           "raw_scores": BOOLEAN, **TEI_OPTIONS}, "inputs"),
    "SimilarityRequest": obj({"inputs": obj({"source_sentence": STRING, "sentences": array(STRING)},
                                            "source_sentence", "sentences"),
                              "parameters": {"anyOf": [obj(dict(TEI_OPTIONS)), {"type": "null"}]}}, "inputs"),
    "TokenizeRequest": obj({"inputs": {"anyOf": [STRING, array(STRING)]}, "add_special_tokens": BOOLEAN,
                            "prompt_name": NULLABLE_STRING}, "inputs"),
    "DecodeRequest": obj({"ids": {"anyOf": [array(TOKEN_ID), array(array(TOKEN_ID))]},
                          "skip_special_tokens": BOOLEAN}, "ids"),
    "OpenAIEmbeddingsRequest": obj({"input": ref("Input"), "model": STRING, "user": STRING,
                                    "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                                    "dimensions": {"type": "integer", "minimum": 0}}, "input"),
    # Cohere's v1/v2 and Jina's rerank: documents as strings or objects (a `text`, or the `rank_fields`).
    "CohereRerankRequest": obj({"model": STRING, "query": {"anyOf": [STRING, obj({"text": STRING}, "text")]},
                                "documents": array({"anyOf": [STRING, {"type": "object"}]}, minItems=1),
                                "top_n": {"type": "integer", "minimum": 1}, "return_documents": BOOLEAN,
                                "rank_fields": array(STRING)}, "query", "documents"),
    # Cohere's embed, v1 and v2 (dialects/cohere.py): `texts`, or v2's `inputs` of text parts.
    "CohereEmbedRequest": {**obj({
        "model": STRING, "texts": array(STRING, minItems=1),
        "inputs": array(obj({"content": array(obj({"type": {"const": "text"}, "text": STRING}, "type", "text"),
                                              minItems=1)}, "content"), minItems=1),
        "input_type": STRING, "embedding_types": array({"type": "string", "enum": list(EMBEDDING_TYPES)},
                                                       minItems=1),
        "truncate": {"type": "string", "enum": ["NONE", "START", "END"]},
        "output_dimension": {"type": "integer", "minimum": 1}}),
        "anyOf": [{"required": ["texts"]}, {"required": ["inputs"]}]},
    # Ollama's (dialects/ollama.py).
    "OllamaEmbedRequest": obj({"model": STRING, "input": {"anyOf": [STRING, array(STRING, minItems=1)]},
                               "truncate": BOOLEAN, "dimensions": {"type": "integer", "minimum": 1},
                               "keep_alive": {"type": ["string", "number"]}, "options": {"type": "object"}},
                              "input"),
    "OllamaEmbeddingsRequest": obj({"model": STRING, "prompt": {"type": "string", "minLength": 1},
                                    "keep_alive": {"type": ["string", "number"]}, "options": {"type": "object"}},
                                   "prompt"),
    "OllamaShowRequest": obj({"model": STRING, "name": STRING}),
}

PREDICTION: Schema = obj({"score": NUMBER, "label": STRING}, "score", "label")
TEI_RERANK_RESULT: Schema = obj({"index": COUNT, "score": NUMBER, "text": STRING}, "index", "score")
MODEL_TYPE: Schema = {"type": "object", "minProperties": 1, "maxProperties": 1}

RESPONSES: dict[str, Schema] = {
    "EmbedResponse": array(array(NUMBER)),
    "EmbedAllResponse": array(array(array(NUMBER))),
    "EmbedSparseResponse": array(array(obj({"index": COUNT, "value": NUMBER}, "index", "value"))),
    "RerankResponse": array(TEI_RERANK_RESULT),
    "PredictResponse": {"anyOf": [array(PREDICTION), array(array(PREDICTION))]},
    "SimilarityResponse": array(NUMBER),
    "TokenizeResponse": array(array(obj({"id": COUNT, "text": STRING, "special": BOOLEAN,
                                         "start": {"type": ["integer", "null"]}, "stop": {"type": ["integer", "null"]}},
                                        "id", "text", "special", "start", "stop"))),
    "DecodeResponse": array(STRING),
    "Info": obj({"model_id": STRING, "model_sha": NULLABLE_STRING, "model_dtype": STRING,
                 "served_model_name": NULLABLE_STRING, "model_type": MODEL_TYPE,
                 "max_concurrent_requests": COUNT, "max_input_length": COUNT, "max_batch_tokens": COUNT,
                 "max_batch_requests": {"type": ["integer", "null"]}, "max_client_batch_size": COUNT,
                 "auto_truncate": BOOLEAN, "tokenization_workers": COUNT, "version": STRING,
                 "sha": NULLABLE_STRING, "docker_label": NULLABLE_STRING},
                "model_id", "model_dtype", "model_type", "max_concurrent_requests", "max_input_length",
                "max_batch_tokens", "max_client_batch_size", "auto_truncate", "tokenization_workers", "version"),
    "OpenAIEmbeddingsResponse": obj({
        "object": {"const": "list"},
        "data": array(obj({"object": {"const": "embedding"}, "embedding": {"anyOf": [array(NUMBER), STRING]},
                           "index": COUNT}, "object", "embedding", "index")),
        "model": STRING,
        "usage": obj({"prompt_tokens": COUNT, "total_tokens": COUNT}, "prompt_tokens", "total_tokens"),
    }, "object", "data", "model", "usage"),
    "CohereRerankResponse": obj({
        "id": STRING, "model": STRING,
        "results": array(obj({"index": COUNT, "relevance_score": NUMBER, "document": {"type": "object"}},
                             "index", "relevance_score")),
        "usage": obj({"total_tokens": COUNT, "prompt_tokens": COUNT}),
        "meta": obj({"api_version": obj({"version": STRING}, "version"),
                     "billed_units": obj({"search_units": COUNT})}, "api_version"),
    }, "id", "model", "results", "meta"),
    "Model": obj({"id": STRING, "object": {"const": "model"}, "created": COUNT, "owned_by": STRING,
                  "kind": {"type": "string", "enum": ["embed", "sparse", "rerank"]}, "aliases": array(STRING),
                  "dimensions": COUNT, "max_input_length": COUNT, "matryoshka_dimensions": array(COUNT)},
                 "id", "object", "created", "owned_by", "kind"),
    "CohereEmbedResponse": obj({
        "id": STRING, "texts": array(STRING), "response_type": {"enum": ["embeddings_floats", "embeddings_by_type"]},
        "embeddings": {"anyOf": [array(array(NUMBER)), obj({
            "float": array(array(NUMBER)), "base64": array(STRING),
            "int8": array(array({"type": "integer", "minimum": -128, "maximum": 127})),
            "uint8": array(array({"type": "integer", "minimum": 0, "maximum": 255})),
            "binary": array(array({"type": "integer", "minimum": -128, "maximum": 127})),
            "ubinary": array(array({"type": "integer", "minimum": 0, "maximum": 255}))})]},
        "meta": obj({"api_version": obj({"version": STRING}, "version"),
                     "billed_units": obj({"input_tokens": COUNT}), "warnings": array(STRING)}, "api_version"),
    }, "id", "embeddings", "texts", "meta", "response_type"),
    "OllamaEmbedResponse": obj({"model": STRING, "embeddings": array(array(NUMBER)), "total_duration": COUNT,
                                "load_duration": COUNT, "prompt_eval_count": COUNT}, "model", "embeddings"),
    "OllamaEmbeddingsResponse": obj({"embedding": array(NUMBER)}, "embedding"),
    "OllamaTags": obj({"models": array(obj({
        "name": STRING, "model": STRING, "modified_at": STRING, "size": COUNT, "digest": STRING,
        "details": {"type": "object"}}, "name", "model", "modified_at", "size", "digest", "details"))}, "models"),
    "OllamaShow": obj({"details": {"type": "object"}, "model_info": {"type": "object"},
                       "capabilities": array(STRING)}, "details", "model_info", "capabilities"),
    "OllamaVersion": obj({"version": STRING}, "version"),
    "ModelList": obj({"object": {"const": "list"}, "data": array(ref("Model"))}, "object", "data"),
}

COMPONENTS: dict[str, Schema] = {**ERRORS, **REQUESTS, **RESPONSES}
