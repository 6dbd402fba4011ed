"""Synthetic Hub repositories for the Hub stand-in: real file lists, small deterministic content.

Binary files get real size // SCALE bytes (a 133 MB model.safetensors becomes 133 kB); JSON files
are valid JSON with the keys TEI reads. Used by tests/test_download.py and benchmarks/.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

SCALE = 1000
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".h5", ".msgpack", ".ot", ".model")
GRANTED_TOKEN = "hf_granted"

Spec = dict[str, "int | dict | list"]  # path → real size in bytes, or JSON content


@dataclass(frozen=True)
class FakeFile:
    """One file: its bytes and the two hashes the Hub reports (git blob sha1, LFS sha256)."""

    path: str
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class FakeRepo:
    """A model repository at one commit (``revisions`` maps "main" to it)."""

    repo_id: str
    files: dict[str, FakeFile]
    gated: bool = False
    granted: frozenset[str] = frozenset({GRANTED_TOKEN})
    revisions: dict[str, str] = field(default_factory=dict)

    def info(self, sha: str, blobs: bool) -> dict[str, object]:
        """The /api/models answer; ``blobs`` adds size, blobId and lfs to each sibling."""
        siblings = [self._sibling(f, blobs) for f in self.files.values()]
        gated = "manual" if self.gated else False
        return {"_id": sha[:24], "id": self.repo_id, "modelId": self.repo_id, "sha": sha, "private": False,
                "gated": gated, "disabled": False, "tags": [], "siblings": siblings}

    def tree(self) -> list[dict[str, object]]:
        """The recursive /tree listing snapshot_download asks for."""
        entries: list[dict[str, object]] = []
        for f in self.files.values():
            entry: dict[str, object] = {"type": "file", "oid": f.git_sha1, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(entry)
        return entries

    def tei_files(self, backend: str) -> dict[str, int]:
        """TEI's file set (path → size) worked out from this repo's own content, both passes."""
        from embed_launcher.models.fileset import (
            dense_paths_from_modules,
            followups,
            select_tei_files,
            shards_from_index,
        )

        extra: dict[str, tuple[str, ...]] = {}
        for name in followups(select_tei_files(list(self.files), backend)):
            body = json.loads(self.files[name].data)
            if name.endswith("index.json"):
                extra["weight_map_shards"] = shards_from_index(body)
            else:
                extra["dense_paths"] = dense_paths_from_modules(body)
        return {f: self.files[f].size for f in select_tei_files(list(self.files), backend, **extra)}

    @staticmethod
    def _sibling(f: FakeFile, blobs: bool) -> dict[str, object]:
        if not blobs:
            return {"rfilename": f.path}
        lfs = {"size": f.size, "sha256": f.sha256, "pointerSize": 134} if f.lfs else None
        return {"rfilename": f.path, "size": f.size, "blobId": f.git_sha1, **({"lfs": lfs} if lfs else {})}


def make_repo(repo_id: str, spec: Spec, *, gated: bool = False, scale: int = SCALE) -> FakeRepo:
    """Build a repo from ``path → real size | JSON``; content is a function of the path only."""
    files = {}
    for path, value in spec.items():
        if isinstance(value, int):
            data, lfs = _bytes(path, max(1, value // scale)), path.endswith(LFS_SUFFIXES) or value >= 10_000_000
        else:
            data, lfs = json.dumps(value, indent=1).encode(), False
        files[path] = FakeFile(path, data, lfs)
    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    return FakeRepo(repo_id, files, gated=gated, revisions={"main": sha})


def _bytes(path: str, size: int) -> bytes:
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


# -- building blocks ---------------------------------------------------------------------------
def _tokenizer(kind: str) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": kind, "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2}}}


def _st_configs(model_type: str, arch: str, dim: int, pooling: str = "cls", extra_modules: list | None = None) -> Spec:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               *(extra_modules or []),
               {"idx": 9, "name": "9", "path": "9_Normalize", "type": "sentence_transformers.models.Normalize"}]
    return {
        ".gitattributes": 1_519,
        "README.md": 94_783,
        "1_Pooling/config.json": {"word_embedding_dimension": dim, f"pooling_mode_{pooling}": True},
        "config.json": {"model_type": model_type, "architectures": [arch], "hidden_size": dim,
                        "max_position_embeddings": 512},
        "config_sentence_transformers.json": {"prompts": {}, "default_prompt_name": None},
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": True},
        "special_tokens_map.json": {"cls_token": "[CLS]", "sep_token": "[SEP]"},
        "tokenizer.json": _tokenizer("WordPiece"),
        "tokenizer_config.json": {"model_max_length": 512},
    }


def _onnx_variants(base: int) -> Spec:
    return {"onnx/model.onnx": base, "onnx/model_O1.onnx": base - 40_000, "onnx/model_O2.onnx": base - 70_000,
            "onnx/model_O3.onnx": base - 70_100, "onnx/model_O4.onnx": base // 2,
            "onnx/model_qint8_arm64.onnx": base // 4, "onnx/model_qint8_avx512.onnx": base // 4,
            "onnx/model_qint8_avx512_vnni.onnx": base // 4, "onnx/model_quint8_avx2.onnx": base // 4 + 20_000,
            "openvino/openvino_model.bin": base - 140_000, "openvino/openvino_model.xml": 211_315,
            "openvino/openvino_model_qint8_quantized.bin": base // 4,
            "openvino/openvino_model_qint8_quantized.xml": 368_006}


# -- the repositories --------------------------------------------------------------------------
def _bge_small() -> FakeRepo:
    spec = _st_configs("bert", "BertModel", 384) | _onnx_variants(133_093_490)
    spec |= {"model.safetensors": 133_466_304, "pytorch_model.bin": 133_508_397, "vocab.txt": 231_508,
             "onnx/model_quantized.onnx": 34_014_426}
    return make_repo("BAAI/bge-small-en-v1.5", spec)


def _bge_m3() -> FakeRepo:
    spec = _st_configs("xlm-roberta", "XLMRobertaModel", 1024)
    spec |= {"colbert_linear.pt": 2_100_674, "sparse_linear.pt": 3_516, "pytorch_model.bin": 2_271_145_830,
             "sentencepiece.bpe.model": 5_069_051, "long.jpg": 127_000, "imgs/bm25.jpg": 132_000,
             "imgs/long.jpg": 485_000, "imgs/miracl.jpg": 576_000, "imgs/mkqa.jpg": 608_000,
             "imgs/nqa.jpg": 158_000, "imgs/others.webp": 21_000,
             "onnx/Constant_7_attr__value": 65_552, "onnx/config.json": {"model_type": "xlm-roberta"},
             "onnx/model.onnx": 724_923, "onnx/model.onnx_data": 2_266_820_608,
             "onnx/sentencepiece.bpe.model": 5_069_051, "onnx/special_tokens_map.json": {"cls_token": "<s>"},
             "onnx/tokenizer.json": _tokenizer("Unigram"), "onnx/tokenizer_config.json": {"model_max_length": 8192}}
    return make_repo("BAAI/bge-m3", spec)


def _minilm() -> FakeRepo:
    spec = _st_configs("bert", "BertModel", 384, pooling="mean") | _onnx_variants(90_405_214)
    spec |= {"model.safetensors": 90_868_376, "pytorch_model.bin": 90_888_945, "rust_model.ot": 90_887_379,
             "tf_model.h5": 91_005_696, "data_config.json": 39_265, "train_script.py": 13_156, "vocab.txt": 231_508}
    return make_repo("sentence-transformers/all-MiniLM-L6-v2", spec)


def _reranker() -> FakeRepo:
    spec: Spec = {".gitattributes": 1_519, "README.md": 9_039, "assets/BEIR-bge-en-v1.5.png": 294_000,
                  "assets/llama-index.png": 358_000, "assets/miracl.png": 160_000,
                  "config.json": {"model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"],
                                  "id2label": {"0": "LABEL_0"}, "max_position_embeddings": 8194},
                  "model.safetensors": 2_271_071_852, "sentencepiece.bpe.model": 5_069_051,
                  "special_tokens_map.json": {"cls_token": "<s>"}, "tokenizer.json": _tokenizer("Unigram"),
                  "tokenizer_config.json": {"model_max_length": 8192}}
    return make_repo("BAAI/bge-reranker-v2-m3", spec)


def _sharded() -> FakeRepo:
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    spec = _st_configs("mistral", "MistralModel", 4096, pooling="lasttoken")
    spec |= {shards[0]: 300_000_000, shards[1]: 120_000_000,
             "model.safetensors.index.json": {"metadata": {"total_size": 420_000_000},
                                              "weight_map": {"embed.weight": shards[0], "layers.0.w": shards[0],
                                                             "layers.1.w": shards[1], "norm.weight": shards[1]}},
             "pytorch_model-00001-of-00002.bin": 300_000_000, "pytorch_model-00002-of-00002.bin": 120_000_000,
             "pytorch_model.bin.index.json": {"weight_map": {"embed.weight": "pytorch_model-00001-of-00002.bin"}}}
    return make_repo("example/sharded-embedder", spec)


def _bin_only() -> FakeRepo:
    spec: Spec = {"config.json": {"model_type": "roberta", "architectures": ["RobertaModel"],
                                  "max_position_embeddings": 514},
                  "sentence_roberta_config.json": {"max_seq_length": 128}, "tokenizer.json": _tokenizer("BPE"),
                  "pytorch_model.bin": 498_000_000, "tf_model.h5": 498_500_000, "flax_model.msgpack": 498_000_000,
                  "merges.txt": 456_318, "vocab.json": 898_669}
    return make_repo("example/legacy-roberta", spec)


def _dense() -> FakeRepo:
    dense = [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    spec = _st_configs("bert", "BertModel", 768, extra_modules=dense)
    spec |= {"model.safetensors": 1_883_000_000, "pytorch_model.bin": 1_883_100_000,
             "2_Dense/config.json": {"in_features": 768, "out_features": 768, "activation_function": "Tanh"},
             "2_Dense/model.safetensors": 2_363_000, "2_Dense/pytorch_model.bin": 2_363_500}
    return make_repo("example/dense-embedder", spec)


def _gated() -> FakeRepo:
    spec = _st_configs("bert", "BertModel", 384) | {"model.safetensors": 33_000_000}
    return make_repo("example/gated-embedder", spec, gated=True)


def _no_weights() -> FakeRepo:
    spec: Spec = {"config.json": {"model_type": "bert"}, "tokenizer.json": _tokenizer("WordPiece"),
                  "README.md": 2_000}
    return make_repo("example/no-weights", spec)


def catalog() -> dict[str, FakeRepo]:
    """Every synthetic repository, by id."""
    repos = (_bge_small(), _bge_m3(), _minilm(), _reranker(), _sharded(), _bin_only(), _dense(), _gated(),
             _no_weights())
    return {r.repo_id: r for r in repos}


BENCHMARK_REPOS = ("BAAI/bge-small-en-v1.5", "BAAI/bge-m3", "sentence-transformers/all-MiniLM-L6-v2")
