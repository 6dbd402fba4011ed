"""Catalog, TEI file-set selection, backend detection, cache verification and progress lines (no network)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from embed_launcher.models import fileset as models
from embed_launcher.models.cache import (
    cached_size,
    inspect_cache,
    mark_ort_refused,
    ort_refused,
    verify_model,
    write_manifest,
)
from embed_launcher.models.fileset import (
    UnusableRepoError,
    dense_paths_from_modules,
    detect_backend,
    followups,
    select_tei_files,
    shards_from_index,
)
from embed_launcher.models.progress import PlainProgress, RichProgress, default_progress, human_bytes

CONFIGS = ["1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
           "config.json", "tokenizer.json"]
BGE_SMALL = CONFIGS + ["README.md", "model.safetensors", "pytorch_model.bin", "modules.json", "onnx/model.onnx",
                       "onnx/model_O1.onnx", "onnx/model_O4.onnx", "onnx/model_quantized.onnx",
                       "openvino/openvino_model.bin", "tokenizer_config.json", "vocab.txt"]
BGE_M3 = CONFIGS + ["pytorch_model.bin", "modules.json", "colbert_linear.pt", "sparse_linear.pt",
                    "onnx/model.onnx", "onnx/model.onnx_data", "onnx/Constant_7_attr__value", "onnx/tokenizer.json",
                    "tokenizer_config.json", "sentencepiece.bpe.model"]
RERANKER = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors", "sentencepiece.bpe.model"]
SHARDED = CONFIGS + ["model.safetensors.index.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "pytorch_model.bin", "modules.json"]
ROOT_ONNX = ["config.json", "tokenizer.json", "model.onnx", "model.onnx_data", "model_quantized.onnx",
             "onnx/model_O1.onnx", "model.safetensors"]
LEGACY = ["config.json", "tokenizer.json", "sentence_xlnet_config.json", "sentence_roberta_config.json",
          "pytorch_model.bin", "tf_model.h5"]
DENSE = CONFIGS + ["model.safetensors", "modules.json", "2_Dense/config.json", "2_Dense/pytorch_model.bin",
                   "3_Dense/config.json", "3_Dense/model.safetensors", "3_Dense/pytorch_model.bin"]


@pytest.mark.parametrize(
    ("listing", "backend", "extra", "expected"),
    [
        (BGE_SMALL, "onnx", {}, CONFIGS + ["onnx/model.onnx", "tokenizer_config.json"]),
        (BGE_SMALL, "candle", {}, CONFIGS + ["model.safetensors", "modules.json"]),
        (BGE_M3, "onnx", {}, CONFIGS + ["onnx/model.onnx", "onnx/model.onnx_data", "tokenizer_config.json"]),
        (BGE_M3, "candle", {}, CONFIGS + ["pytorch_model.bin", "modules.json"]),
        (RERANKER, "onnx", {}, ["config.json", "tokenizer.json", "model.safetensors"]),
        (RERANKER, "candle", {}, ["config.json", "tokenizer.json", "model.safetensors"]),
        (SHARDED, "candle", {}, CONFIGS + ["model.safetensors.index.json", "modules.json"]),
        (SHARDED, "onnx", {"weight_map_shards": ["model-00002-of-00002.safetensors",
                                                 "model-00001-of-00002.safetensors"]},
         CONFIGS + ["model.safetensors.index.json", "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors", "modules.json"]),
        (ROOT_ONNX, "onnx", {}, ["config.json", "tokenizer.json", "model.onnx", "model.onnx_data"]),
        (ROOT_ONNX, "candle", {}, ["config.json", "tokenizer.json", "model.safetensors"]),
        (LEGACY, "candle", {}, ["sentence_roberta_config.json", "config.json", "tokenizer.json", "pytorch_model.bin"]),
        (DENSE, "candle", {"dense_paths": ["2_Dense", "3_Dense"]},
         CONFIGS + ["model.safetensors", "modules.json", "2_Dense/config.json", "2_Dense/pytorch_model.bin",
                    "3_Dense/config.json", "3_Dense/model.safetensors"]),
    ],
    ids=["bge-small-onnx", "bge-small-candle", "bge-m3-onnx", "bge-m3-candle", "reranker-onnx-falls-back",
         "reranker-candle", "sharded-first-pass", "sharded-final", "root-onnx", "root-onnx-candle",
         "legacy-sentence-config", "dense-modules"],
)
def test_select_tei_files(listing: list[str], backend: str, extra: dict, expected: list[str]) -> None:
    """Exactly the files TEI loads for the backend, in TEI's fetch order, nothing else."""
    assert select_tei_files(listing, backend, **extra) == expected


@pytest.mark.parametrize(
    ("listing", "shards", "problem"),
    [
        (["tokenizer.json", "model.safetensors"], (), "no config.json"),
        (["config.json", "model.safetensors", "vocab.txt"], (), "no tokenizer.json"),
        (["config.json", "tokenizer.json", "tf_model.h5", "onnx/model_O1.onnx"], (), "no weights"),
        (["config.json", "tokenizer.json", "model.safetensors.index.json", "a.safetensors"], ("a.safetensors", "b"),
         "does not contain: b"),
    ],
)
def test_select_rejects_repos_tei_cannot_start(listing: list[str], shards: tuple[str, ...], problem: str) -> None:
    """A repo without config, tokenizer or complete weights raises a clear error."""
    with pytest.raises(UnusableRepoError, match=problem):
        select_tei_files(listing, "onnx", weight_map_shards=shards)


def test_followups_and_their_parsers() -> None:
    """The index and modules.json are named for the second pass and parsed into shards / Dense paths."""
    first = select_tei_files(DENSE + ["model.safetensors.index.json"], "candle")
    assert followups(first) == ("modules.json",)
    assert followups(select_tei_files(SHARDED, "candle")) == ("model.safetensors.index.json", "modules.json")
    assert shards_from_index({"weight_map": {"a": "s2", "b": "s1", "c": "s2"}}) == ("s1", "s2")
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "2_Dense/", "type": "sentence_transformers.models.Dense"}]
    assert dense_paths_from_modules(modules) == ("2_Dense",)
    assert dense_paths_from_modules({"not": "a list"}) == ()
    with pytest.raises(UnusableRepoError):
        shards_from_index({"metadata": {}})


@pytest.mark.parametrize(
    ("setting", "environ", "has_ort", "expected"),
    [
        ("onnx", {"CUDA_VERSION": "12.9.1"}, False, "onnx"),
        ("candle", {}, True, "candle"),
        ("auto", {}, None, "onnx"),
        ("auto", {"CUDA_VERSION": "12.9.1"}, None, "candle"),
        ("auto", {"CUDA_VERSION": " "}, None, "onnx"),
        ("auto", {"NVIDIA_VISIBLE_DEVICES": "all"}, None, "onnx"),
        ("auto", {}, False, "candle"),
        ("auto", {}, True, "onnx"),
        ("auto", {"CUDA_VERSION": "12.9.1"}, True, "candle"),
    ],
)
def test_detect_backend(setting: str, environ: dict[str, str], has_ort: bool | None, expected: str) -> None:
    """Explicit settings win; auto: candle in CUDA images or for a TEI built without ORT, else onnx."""
    assert detect_backend(setting, environ, has_ort) == expected


@pytest.mark.parametrize(
    ("backend", "setting", "dtype", "pooling", "expected"),
    [
        ("onnx", "auto", None, None, "onnx"),
        ("onnx", "auto", "float32", "mean", "onnx"),
        ("onnx", "auto", "float16", None, "candle"),  # ORT: "only float32"
        ("onnx", "auto", None, "splade", "candle"),  # ORT: "use `candle` instead"
        ("candle", "auto", "float16", None, "candle"),
        ("onnx", "onnx", "float16", None, "onnx"),  # an explicit EMBED_BACKEND is never second-guessed
    ],
)
def test_service_backend_follows_what_ort_refuses(
    backend: str, setting: str, dtype: str | None, pooling: str | None, expected: str
) -> None:
    """A service whose flags TEI's ORT backend refuses gets candle's weights, since TEI falls back to candle."""
    assert models.service_backend(backend, setting=setting, dtype=dtype, pooling=pooling) == expected


def test_a_recorded_ort_refusal_means_candle_weights(tmp_path: Path) -> None:
    """Once TEI's ONNX backend refused a model, auto picks candle for it; other models are unaffected."""
    assert not ort_refused(tmp_path, "BAAI/bge-m3")
    mark_ort_refused(tmp_path, "BAAI/bge-m3")
    assert ort_refused(tmp_path, "BAAI/bge-m3") and not ort_refused(tmp_path, "BAAI/bge-small-en-v1.5")
    pick = models.service_backend
    assert pick("onnx", setting="auto", dtype=None, pooling=None, ort_refused=True) == "candle"
    assert pick("onnx", setting="onnx", dtype=None, pooling=None, ort_refused=True) == "onnx"


def test_detect_backend_rejects_unknown() -> None:
    """A typo is an error, not a silent default."""
    with pytest.raises(ValueError, match="auto, onnx or candle"):
        detect_backend("ort", {})


def test_catalog_keeps_the_original_models_and_one_default_per_list() -> None:
    """The original's ten recommended models; one default per list."""
    assert [m.repo_id for m in models.EMBEDDING_MODELS if m.default] == ["BAAI/bge-small-en-v1.5"]
    assert [m.repo_id for m in models.RERANKER_MODELS if m.default] == ["BAAI/bge-reranker-v2-m3"]
    assert len({m.repo_id for m in models.EMBEDDING_MODELS + models.RERANKER_MODELS}) == 10


def test_catalog_sizes_are_the_weights_tei_loads_never_a_guess() -> None:
    """Each size is the sum of the weight files in TEI's CPU file set of the repository's real file list.

    The Hub stand-in keeps real file lists (sizes scaled down by SCALE); a model whose list this
    project does not keep has no size ("—"). bge-m3 was listed at "~570 MB", its parameter count.
    """
    from fake_hub.repos import LFS_SUFFIXES, SCALE, catalog

    repos = catalog()
    for entry in models.EMBEDDING_MODELS + models.RERANKER_MODELS:
        if entry.repo_id not in repos:
            assert (entry.weight_bytes, entry.disk) == (None, "—"), entry.repo_id
            continue
        weights = {f: n for f, n in repos[entry.repo_id].tei_files("onnx").items() if f.endswith(LFS_SUFFIXES)}
        assert weights, entry.repo_id
        assert entry.weight_bytes is not None
        assert abs(entry.weight_bytes - SCALE * sum(weights.values())) < SCALE * len(weights), entry.repo_id
    sizes = {m.repo_id: m.disk for m in models.EMBEDDING_MODELS + models.RERANKER_MODELS}
    assert sizes["BAAI/bge-m3"] == "2.3 GB" and sizes["BAAI/bge-small-en-v1.5"] == "133 MB"


# -- cache verification on hand-built caches (as TEI's hf-hub or huggingface_hub write them) ------------
COMMIT = "a" * 40
REPO = "org/model"


def make_cache(root: Path, files: dict[str, bytes], *, ref: str | None = "main", commit: str = COMMIT) -> Path:
    """models--org--model with blobs, relative snapshot links and refs/<ref>."""
    repo = root / "models--org--model"
    for i, (name, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"{commit[:8]}{i:04d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


BASE = {"config.json": b"{}", "tokenizer.json": b"{}"}


@pytest.mark.parametrize(
    ("files", "backend", "complete", "missing"),
    [
        (BASE | {"model.safetensors": b"w" * 10}, "candle", True, ()),
        (BASE | {"onnx/model.onnx": b"o"}, "onnx", True, ()),
        (BASE | {"onnx/model.onnx": b"o"}, "candle", False, (models.SAFETENSORS,)),
        (BASE | {"pytorch_model.bin": b"p"}, "onnx", True, ()),
        ({"config.json": b"{}", "model.safetensors": b"w"}, "candle", False, ("tokenizer.json",)),
        (BASE | {"model.safetensors.index.json": json.dumps({"weight_map": {"a": "s1", "b": "s2"}}).encode(),
                 "s1": b"1", "s2": b"2"}, "candle", True, ()),
        (BASE | {"model.safetensors.index.json": json.dumps({"weight_map": {"a": "s1", "b": "s2"}}).encode(),
                 "s1": b"1"}, "candle", False, ("weights",)),
    ],
    ids=["safetensors", "onnx", "onnx-only-for-candle", "bin-for-onnx-image", "no-tokenizer", "all-shards",
         "missing-shard"],
)
def test_verify_by_rule_without_manifest(tmp_path: Path, files: dict[str, bytes], backend: str, complete: bool,
                                         missing: tuple[str, ...]) -> None:
    """A cache made by another tool counts when config, tokenizer and one complete weight format are there."""
    make_cache(tmp_path, files)
    result = verify_model(tmp_path, REPO, None, backend)
    assert result.complete is complete
    assert all(any(m in entry for entry in result.missing) for m in missing)
    assert result.snapshot_dir == tmp_path / "models--org--model" / "snapshots" / COMMIT


def test_verify_dangling_link_is_missing(tmp_path: Path) -> None:
    """A snapshot link whose blob is gone does not count."""
    repo = make_cache(tmp_path, BASE | {"model.safetensors": b"w"})
    (repo / "snapshots" / COMMIT / "model.safetensors").resolve().unlink()
    assert not verify_model(tmp_path, REPO, None, "candle").complete


def test_verify_follows_the_manifest(tmp_path: Path) -> None:
    """With a manifest, every recorded file must be present; size is their sum."""
    make_cache(tmp_path, BASE | {"model.safetensors": b"w" * 10})
    write_manifest(tmp_path, REPO, COMMIT, "candle", {"config.json": 2, "tokenizer.json": 2,
                                                      "model.safetensors": 10, "modules.json": 3})
    result = verify_model(tmp_path, REPO, None, "candle")
    assert (result.complete, result.missing, result.size_bytes) == (False, ("modules.json",), 14)
    assert verify_model(tmp_path, REPO, None, "onnx").complete  # no onnx manifest: the rule applies


@pytest.mark.parametrize(
    ("ref", "revision", "found"),
    [("main", None, True), ("v2", "v2", True), ("main", "v2", False), (None, COMMIT, True), (None, None, False)],
)
def test_inspect_cache_resolves_revisions(tmp_path: Path, ref: str | None, revision: str | None, found: bool) -> None:
    """refs/<rev> or a full commit hash picks the snapshot; anything else finds none."""
    make_cache(tmp_path, BASE | {"model.safetensors": b"w"}, ref=ref)
    state = inspect_cache(tmp_path, REPO, revision)
    assert (state.snapshot_dir is not None) is found
    assert verify_model(tmp_path, REPO, revision, "candle").complete is found


def test_verify_absent_model(tmp_path: Path) -> None:
    """No folder at all: incomplete, nothing found, everything listed as missing."""
    result = verify_model(tmp_path, "org/absent", None, "onnx")
    assert (result.complete, result.snapshot_dir, result.size_bytes) == (False, None, 0)
    assert result.missing[:2] == ("config.json", "tokenizer.json")


def test_cached_size_counts_blobs_once(tmp_path: Path) -> None:
    """Bytes on disk: blobs, partial files and refs, never the links to them."""
    repo = make_cache(tmp_path, {"config.json": b"x" * 100, "model.safetensors": b"y" * 1000})
    (repo / "blobs" / "deadbeef.incomplete").write_bytes(b"z" * 50)
    assert cached_size(tmp_path, REPO) == 1150 + len(COMMIT)  # + refs/main
    assert cached_size(tmp_path, "org/absent") == 0


# -- progress lines -----------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_every_ten_percent_or_five_seconds() -> None:
    """Plain mode prints greppable lines: at start, each 10 %, after 5 s of slow progress, and at the end."""
    out, clock = io.StringIO(), FakeClock()
    progress = PlainProgress(out, clock)
    progress.start("BAAI/bge-m3", 570_000_000, 0)
    for _ in range(20):
        progress.advance("BAAI/bge-m3", 12_000_000)  # 20 × 2.1 %: lines at 10, 21, 31, 42 %
    clock.now = 6.0
    progress.advance("BAAI/bge-m3", 6_000_000)  # 43 %: only 1 % more, but 5 s have passed
    progress.finish("BAAI/bge-m3")
    lines = out.getvalue().splitlines()
    assert lines[0] == "Downloading BAAI/bge-m3: 0% (0 B of 570 MB)"
    assert "Downloading BAAI/bge-m3: 42% (240 MB of 570 MB)" in lines
    assert lines[-2] == "Downloading BAAI/bge-m3: 43% (246 MB of 570 MB)"
    assert lines[-1] == "Downloading BAAI/bge-m3: 100% (570 MB of 570 MB)"
    assert len(lines) == 7 and "\x1b" not in out.getvalue()


def test_plain_progress_never_claims_100_percent_for_a_stopped_pull() -> None:
    """A stopped or failed pull ends on its real percentage; the error line that follows says why."""
    out = io.StringIO()
    progress = PlainProgress(out, FakeClock())
    progress.start("BAAI/bge-m3", 570_000_000, 0)
    progress.advance("BAAI/bge-m3", 120_000_000)
    progress.finish("BAAI/bge-m3", completed=False)
    assert "100%" not in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "Downloading BAAI/bge-m3: 21% (120 MB of 570 MB)"


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (133_000, "133 kB"),
                                         (570_000_000, "570 MB"), (1_300_000_000, "1.3 GB")])
def test_human_bytes(n: int, text: str) -> None:
    """Decimal units, as the Hub and the catalog print sizes."""
    assert human_bytes(n) == text


def test_rich_progress_and_the_default_choice() -> None:
    """Off a terminal the default is plain lines; the rich bar runs start to finish without a TTY too."""
    assert isinstance(default_progress(io.StringIO()), PlainProgress)
    out = io.StringIO()
    bar = RichProgress(out)
    bar.start("BAAI/bge-m3", 1000, 0)
    bar.advance("BAAI/bge-m3", 400)
    bar.advance("not/started", 5)
    bar.finish("BAAI/bge-m3")
    assert "BAAI/bge-m3" in out.getvalue()
