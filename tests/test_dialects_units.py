"""The dialects' pure parts: Cohere's quantisations and parsing, Ollama's parsing, OpenAI's token ids (issue 18)."""

from __future__ import annotations

import base64
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from embed_launcher.gateway import tokens
from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError
from embed_launcher.gateway.dialects import cohere, ollama, tei
from embed_launcher.gateway.dialects import openai as openai_dialect
from embed_launcher.gateway.shapes import RequestError
from embed_launcher.reporting.errors import LauncherError


def test_binary_packs_sign_bits_first_dimension_highest() -> None:
    vector = [0.1, -0.1, 0.2, -0.3, 0.0, 0.5, 0.5, -0.5, 0.9]  # 9 dimensions: a second, zero-padded byte
    assert cohere.ubinary(vector) == [0b10100110, 0b10000000]
    assert cohere.binary(vector) == [0b10100110 - 128, 0b10000000 - 128]


def test_int8_and_uint8_use_the_documented_range() -> None:
    vector = [1.0, -1.0, 0.0, 0.5, 0.001] + [0.0] * 59  # 64 dimensions: r = 8/sqrt(64) = 1
    assert cohere.quantisation_range(64) == 1.0
    assert cohere.int8(vector)[:5] == [127, -127, 0, 64, 0]
    assert cohere.uint8(vector)[:5] == [255, 0, 128, 191, 128]
    wide = [0.5, -0.5] + [0.0] * 1022  # 1024 dimensions: r = 0.25, so ±0.5 is clipped
    assert cohere.int8(wide)[:2] == [127, -128] and cohere.uint8(wide)[:2] == [255, 0]


def test_base64_is_little_endian_float32() -> None:
    assert struct.unpack("<2f", base64.b64decode(cohere.b64([0.5, -2.0]))) == (0.5, -2.0)


def test_cohere_v1_and_v2_read_the_same_request() -> None:
    v1 = cohere.parse_embed({"texts": ["a", "b"], "model": "m", "truncate": "START"}, "1")
    v2 = cohere.parse_embed({"inputs": [{"content": [{"type": "text", "text": "a"}]}, "b"], "model": "m",
                             "truncate": "START", "embedding_types": ["int8", "int8"]}, "2")
    assert v1.call == v2.call and v1.call.texts == ("a", "b") and v1.call.direction == "Left"
    assert (v1.by_type, v1.types) == (False, ("float",)) and (v2.by_type, v2.types) == (True, ("int8",))
    assert v1.call.tei_body() == {"inputs": ["a", "b"], "normalize": True, "truncate": True,
                                  "truncation_direction": "Left"}


@pytest.mark.parametrize(("body", "word"), [
    ([], "object"), ({"texts": "a"}, "texts"), ({"texts": [1]}, "texts"), ({"texts": ["a"], "model": 3}, "model"),
    ({"texts": ["a"], "input_type": 3}, "input_type"), ({"texts": ["a"], "embedding_types": []}, "embedding_types"),
    ({"texts": ["a"], "truncate": "none"}, "truncate"), ({"texts": ["a"], "output_dimension": 0}, "output_dimension"),
    ({"inputs": [{"content": []}]}, "inputs[0]"),
])
def test_cohere_embed_refuses_what_it_cannot_read(body: Any, word: str) -> None:
    with pytest.raises(RequestError) as caught:
        cohere.parse_embed(body, "2")
    assert caught.value.status == 422 and word in caught.value.message


def test_prompt_names_from_the_models_file_replace_the_common_ones() -> None:
    assert cohere.prompt_candidates("search_query", {}) == ("query", "search_query")
    assert cohere.prompt_candidates("search_query", {"search_query": "q"}) == ("q",)
    assert cohere.prompt_candidates("clustering", {"search_query": "q"}) == ()
    assert cohere.prompt_candidates("image", {}) == () and cohere.prompt_candidates(None, {}) == ()


def test_a_prompt_rejection_is_told_from_other_validation_errors() -> None:
    refused = b'{"error":"Input validation error: `default-prompt-name` is set to `query` but it was not found",' \
              b'"error_type":"Validation"}'
    assert tei.is_prompt_rejection(422, refused, "query")
    assert not tei.is_prompt_rejection(422, refused, "passage")
    assert not tei.is_prompt_rejection(413, refused, "query")
    assert not tei.is_prompt_rejection(422, b'{"error":"`inputs` must have less than 512 tokens"}', "query")


def test_ollama_reads_both_embedding_routes() -> None:
    assert ollama.parse_embed({"model": "m:latest", "input": "a"}).texts == ("a",)
    assert ollama.parse_embed({"model": "m:latest", "input": ["a"]}).model == "m"
    assert ollama.parse_embeddings({"model": "m:v1", "prompt": "p"}).model == "m:v1"
    bodies: list[dict[str, Any]] = [{"input": []}, {"input": 1}, {"input": "a", "truncate": "yes"},
                                    {"input": "a", "dimensions": -1}]
    for body in bodies:
        with pytest.raises(RequestError) as caught:
            ollama.parse_embed(body)
        assert caught.value.status == 400
    with pytest.raises(RequestError):
        ollama.parse_embeddings({"prompt": ""})


@pytest.mark.parametrize(("value", "ids"), [
    ([1, 2], True), ([[1, 2], "text"], True), (["a", "b"], False), ("a", False), ([], False), ([True], False),
    ([[]], False),
])
def test_token_ids_are_found_by_type(value: Any, ids: bool) -> None:
    assert openai_dialect.has_token_ids(value) is ids


def test_decoded_input_turns_every_id_list_into_text() -> None:
    def decode(ids: Any) -> str:
        return "-".join(map(str, ids))

    assert openai_dialect.decoded_input([1, 2], decode) == "1-2"
    assert openai_dialect.decoded_input([[1], "x", [2, 3]], decode) == ["1", "x", "2-3"]


def test_the_token_policy_is_checked() -> None:
    base = {"listen": [{"host": "127.0.0.1", "port": 1}],
            "models": [{"name": "m", "kind": "embed", "upstream": "http://127.0.0.1:2", "default": True,
                        "prompts": {"search_query": "query"}, "matryoshka_dimensions": [256, 128]}]}
    config = GatewayConfig.from_dict(base)
    assert config.token_input == "reject" and config.models[0].prompts == {"search_query": "query"}
    assert GatewayConfig.from_json(config.to_json()) == config
    with pytest.raises(GatewayConfigError, match="token_input"):
        GatewayConfig.from_dict({**base, "token_input": "guess"})
    with pytest.raises(GatewayConfigError, match="matryoshka_dimensions"):
        GatewayConfig.from_dict({**base, "models": [{**base["models"][0], "matryoshka_dimensions": [0]}]})


def test_seeding_writes_tiktokens_cache_files(tmp_path: Path) -> None:
    """tiktoken's cache key is the sha1 of the URL; the content is what tiktoken's own hash check accepts."""
    import hashlib

    import tiktoken.load

    assert tokens.seed(tmp_path) == ["cl100k_base", "o200k_base"]
    url = tokens.BLOB_URLS["cl100k_base"]
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    assert tiktoken.load.check_hash(cached.read_bytes(),
                                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7")
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_decode_without_its_encoding_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens.importlib.util, "find_spec", lambda name: None)  # bpe-openai not installed
    with pytest.raises(LauncherError) as caught:
        tokens.decoder.__wrapped__("cl100k_base")
    assert "embed-launcher[tiktoken]" in str(caught.value) and str(tmp_path) in str(caught.value)
    assert caught.value.exit_code == 2
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # tiktoken not installed
    with pytest.raises(LauncherError, match=r"needs tiktoken: pip install 'embed-launcher\[tiktoken\]'"):
        tokens.decoder.__wrapped__("cl100k_base")
