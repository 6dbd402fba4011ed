"""Model catalog, TEI backend detection and the exact file set TEI loads from a repo (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BACKENDS = ("onnx", "candle")

# TEI's order of legacy Sentence-Transformers config names (core/src/download.rs).
SENTENCE_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
ONNX_PREFIXES = ("model.onnx", "onnx/model.onnx")
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
MODULES = "modules.json"
DENSE_TYPE = "sentence_transformers.models.Dense"


def human_bytes(n: int) -> str:
    """Decimal units, as the Hub shows sizes: 570 MB, 1.3 GB."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f} GB"
    for unit, scale in (("MB", 1_000_000), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class CatalogEntry:
    """One recommended model as `embed_manage --listmodels/--listrerankers` shows it."""

    repo_id: str
    # Bytes of the weight files TEI loads on the CPU images (the ONNX export; safetensors where a
    # repository has none); config and tokenizer files add well under 1 %. None where this project
    # keeps no file list of the repository: shown as "—", never guessed.
    weight_bytes: int | None
    note: str
    default: bool = False

    @property
    def disk(self) -> str:
        return "—" if self.weight_bytes is None else human_bytes(self.weight_bytes)


# The sizes are the Hub's file sizes as listed in tests/fake_hub/repos.py, which mirrors the real
# repositories' file lists (tests/test_models.py checks the two agree):
#   BAAI/bge-small-en-v1.5                 onnx/model.onnx 133,093,490
#   BAAI/bge-m3                            onnx/model.onnx 724,923 + onnx/model.onnx_data 2,266,820,608
#   sentence-transformers/all-MiniLM-L6-v2 onnx/model.onnx 90,405,214
#   BAAI/bge-reranker-v2-m3                model.safetensors 2,271,071,852 (no ONNX export)
EMBEDDING_MODELS = (
    CatalogEntry("BAAI/bge-small-en-v1.5", 133_093_490, "Fastest; English", default=True),
    CatalogEntry("BAAI/bge-base-en-v1.5", None, "Good balance; English"),
    CatalogEntry("BAAI/bge-large-en-v1.5", None, "High accuracy; English"),
    CatalogEntry("BAAI/bge-m3", 724_923 + 2_266_820_608, "Multilingual; strong cross-lingual retrieval"),
    CatalogEntry("nomic-ai/nomic-embed-text-v1.5", None, "Strong multilingual; long context (8192 tokens)"),
    CatalogEntry("sentence-transformers/all-MiniLM-L6-v2", 90_405_214, "Very small; fast; popular for semantic search"),
)
RERANKER_MODELS = (
    CatalogEntry("BAAI/bge-reranker-v2-m3", 2_271_071_852, "Multilingual; strong accuracy", default=True),
    CatalogEntry("BAAI/bge-reranker-base", None, "English; good balance"),
    CatalogEntry("BAAI/bge-reranker-large", None, "English; highest accuracy"),
    CatalogEntry("cross-encoder/ms-marco-MiniLM-L6-v2", None, "Very small; fast; English"),
)


class UnusableRepoError(ValueError):
    """The repository lacks a file TEI cannot start without (config, tokenizer or weights)."""


def detect_backend(setting: str, environ: Mapping[str, str], tei_has_ort: bool | None = None) -> str:
    """Which weights TEI will load: "onnx" (ORT, CPU images) or "candle".

    "auto": TEI's CUDA images are built without ORT and inherit ``CUDA_VERSION`` from their
    ``nvidia/cuda`` base, so ``CUDA_VERSION`` set → "candle". Otherwise ``tei_has_ort`` decides
    when the binary could be inspected (a bare-metal ``cargo install`` has no ORT unless built
    with ``-F ort``); when it could not (a wrapper script), we assume a CPU image, which tries ORT
    first → "onnx". ``NVIDIA_VISIBLE_DEVICES`` is deliberately ignored: the NVIDIA runtime sets
    it on any container started with ``--gpus``, CPU images included.
    """
    if setting in BACKENDS:
        return setting
    if setting != "auto":
        raise ValueError(f"backend must be auto, onnx or candle, not {setting!r}")
    if environ.get("CUDA_VERSION", "").strip() or tei_has_ort is False:
        return "candle"
    return "onnx"


def model_kind(kind: str) -> str:
    """How messages name a service's model by its kind: "reranker model" (rerank), else "model"."""
    return "reranker model" if kind == "rerank" else "model"


def service_backend(
    backend: str, *, setting: str, dtype: str | None, pooling: str | None, ort_refused: bool = False
) -> str:
    """The weights one service's TEI loads, given the binary's backend and that service's flags.

    TEI's ORT backend refuses anything but float32 and SPLADE pooling, then falls back to candle
    (backends/ort/src/lib.rs); ``ort_refused`` records that it refused this model before. With
    ``EMBED_BACKEND=auto`` such a service gets candle's weights.
    """
    refused = ort_refused or (dtype is not None and dtype != "float32") or pooling == "splade"
    if setting == "auto" and backend == "onnx" and refused:
        return "candle"
    return backend


def select_tei_files(
    siblings: Sequence[str],
    backend: str,
    *,
    weight_map_shards: Sequence[str] = (),
    dense_paths: Sequence[str] = (),
) -> list[str]:
    """The files of a repo listing that TEI will load, in TEI's fetch order.

    Two steps when the first answer contains ``model.safetensors.index.json`` or
    ``modules.json`` (see `followups`): call again with the shards of its ``weight_map``
    (`shards_from_index`) and the Dense module paths (`dense_paths_from_modules`).
    Raises `UnusableRepoError` when TEI could not start from this repo.
    """
    present = set(siblings)
    for required in ("config.json", "tokenizer.json"):
        if required not in present:
            raise UnusableRepoError(f"it has no {required}, which TEI requires")
    files = _config_files(present)
    onnx = [s for s in siblings if s.startswith(ONNX_PREFIXES)] if backend == "onnx" else []
    if onnx:
        files += sorted(onnx) + [f for f in ("tokenizer_config.json",) if f in present]
    else:
        files += _candle_weights(present, weight_map_shards)
        files += _dense_files(present, dense_paths)
    return list(dict.fromkeys(files))


def followups(files: Sequence[str]) -> tuple[str, ...]:
    """The selected JSON files whose contents complete the selection (index, modules.json)."""
    return tuple(f for f in (SAFETENSORS_INDEX, MODULES) if f in files)


def shards_from_index(index: Mapping[str, object]) -> tuple[str, ...]:
    """The distinct shard files named in a safetensors index's ``weight_map``."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, Mapping):
        raise UnusableRepoError(f"its {SAFETENSORS_INDEX} has no weight_map")
    return tuple(sorted({str(v) for v in weight_map.values()}))


def dense_paths_from_modules(modules: object) -> tuple[str, ...]:
    """The folders of the Dense modules listed in a Sentence-Transformers ``modules.json``."""
    if not isinstance(modules, list):
        return ()
    return tuple(
        str(m["path"]).strip("/")
        for m in modules
        if isinstance(m, Mapping) and m.get("type") == DENSE_TYPE and m.get("path")
    )


def _config_files(present: set[str]) -> list[str]:
    sentence = next((name for name in SENTENCE_CONFIGS if name in present), None)
    wanted = ["1_Pooling/config.json", sentence, "config_sentence_transformers.json", "config.json", "tokenizer.json"]
    return [f for f in wanted if f is not None and f in present]


def _candle_weights(present: set[str], shards: Sequence[str]) -> list[str]:
    if SAFETENSORS in present:
        return [SAFETENSORS]
    if SAFETENSORS_INDEX in present:
        missing = [s for s in shards if s not in present]
        if missing:
            raise UnusableRepoError(f"its {SAFETENSORS_INDEX} names shards it does not contain: {', '.join(missing)}")
        return [SAFETENSORS_INDEX, *sorted(shards)]
    if PYTORCH_BIN in present:
        return [PYTORCH_BIN]
    raise UnusableRepoError(
        f"it has no weights TEI can load ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN}, or ONNX on CPU)"
    )


def _dense_files(present: set[str], dense_paths: Sequence[str]) -> list[str]:
    if MODULES not in present:
        return []
    files = [MODULES]
    for path in dense_paths:
        files += [f for f in (f"{path}/config.json",) if f in present]
        weights = f"{path}/{SAFETENSORS}" if f"{path}/{SAFETENSORS}" in present else f"{path}/{PYTORCH_BIN}"
        files += [weights] if weights in present else []
    return files
