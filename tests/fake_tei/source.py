"""Model files of the TEI stand-in: local directory or Hub cache lookup, simulated download, model facts."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fake_tei.args import Args
from fake_tei.log import INFO, WARN, Logger, Span, rust_duration

ST_CONFIG_NAMES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                   "sentence_camembert_config.json", "sentence_albert_config.json",
                   "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
DOWNLOAD = ("text_embeddings_core::download", "core/src/download.rs")
ROUTER = ("text_embeddings_router", "router/src/lib.rs")


class StartupError(Exception):
    """anyhow's `Error: <context>` with one `Caused by:` line; TEI exits 1."""

    def __init__(self, context: str, cause: str | None = None) -> None:
        super().__init__(context)
        self.context, self.cause = context, cause


@dataclass(frozen=True)
class Model:
    """What TEI learns from the model files."""

    root: Path
    reranker: bool
    pooling: str | None
    max_input_length: int
    model_type: str


def hub_cache_dir(args: Args, env: Mapping[str, str]) -> Path:
    cache = args.text("huggingface_hub_cache")
    if cache is not None:
        return Path(cache)
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    return Path(env.get("HOME", "/root")) / ".cache" / "huggingface" / "hub"


def looks_like_reranker(model_id: str) -> bool:
    lowered = model_id.lower()
    return "rerank" in lowered or "cross-encoder" in lowered


def _snapshot_files(model_id: str) -> dict[str, object]:
    reranker = looks_like_reranker(model_id)
    config: dict[str, object] = {"architectures": ["XLMRobertaForSequenceClassification" if reranker else "BertModel"],
                                 "model_type": "xlm-roberta" if reranker else "bert",
                                 "max_position_embeddings": 514 if reranker else 512}
    if reranker:
        config.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    tokenizer = {"version": "1.0", "model": {"type": "WordPiece"}}
    files: dict[str, object] = {"config.json": config, "tokenizer.json": tokenizer,
                                "sentence_bert_config.json": {"max_seq_length": 512}}
    if not reranker:
        files["1_Pooling/config.json"] = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    return files


def _find_snapshot(repo: Path, revision: str) -> Path | None:
    ref = repo / "refs" / revision
    candidates = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    candidates += sorted((repo / "snapshots").glob("*/")) if (repo / "snapshots").is_dir() else []
    for snap in candidates:
        if (snap / "config.json").is_file() and (snap / "tokenizer.json").is_file():
            return snap
    return None


def _write_snapshot(repo: Path, model_id: str, revision: str) -> Path:
    sha = hashlib.sha1(f"{model_id}@{revision}".encode()).hexdigest()
    snap = repo / "snapshots" / sha
    for name, content in _snapshot_files(model_id).items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(json.dumps(content, indent=2) + "\n")
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(sha)
    return snap


def download(args: Args, env: Mapping[str, str], logger: Logger, hub_fail: bool) -> Path:
    """`download_artifacts`: log every file as TEI does, serve from cache, else 'download' or fail."""
    model_id, revision = str(args.text("model_id")), args.text("revision") or "main"
    span, started = Span("download_artifacts"), time.monotonic()
    log = lambda level, line, msg: logger.log(level, *DOWNLOAD, line, msg, span)  # noqa: E731
    log(INFO, 42, "Starting download")
    repo = hub_cache_dir(args, env) / ("models--" + model_id.replace("/", "--"))
    snap = _find_snapshot(repo, revision)
    endpoint = env.get("HF_ENDPOINT") or "https://huggingface.co"
    url = f"{endpoint}/{model_id}/resolve/{revision}/config.json"
    if snap is None and not hub_fail:
        snap = _write_snapshot(repo, model_id, revision)
    status = "401 Unauthorized" if snap is None else "404 Not Found"
    if args.text("pooling") is None:
        log(INFO, 18, "Downloading `1_Pooling/config.json`")
        if snap is None or not (snap / "1_Pooling/config.json").is_file():
            pool_url = url.replace("config.json", "1_Pooling/config.json")
            log(WARN, 50, f"Download failed: request error: HTTP status client error ({status}) for url ({pool_url})")
    for name in ST_CONFIG_NAMES:
        log(INFO, 18, f"Downloading `{name}`")
        if snap is not None and (snap / name).is_file():
            break
    for name in ("config_sentence_transformers.json", "config.json"):
        log(INFO, 18, f"Downloading `{name}`")
    if snap is None:
        raise StartupError("Could not download model artifacts",
                           f"request error: HTTP status client error (401 Unauthorized) for url ({url})")
    log(INFO, 18, "Downloading `tokenizer.json`")
    log(INFO, 72, f"Model artifacts downloaded in {rust_duration(time.monotonic() - started)}")
    return snap


def _read_config(root: Path) -> dict:
    try:
        text = (root / "config.json").read_text(encoding="utf-8")
    except OSError as err:
        raise StartupError("`config.json` not found", f"{os.strerror(err.errno or 2)} (os error {err.errno})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        cause = f"{err.msg} at line {err.lineno} column {err.colno}"
        raise StartupError("Failed to parse `config.json`", cause) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        lines = text.rstrip().split("\n")
        raise StartupError("Failed to parse `config.json`",
                           f"missing field `model_type` at line {len(lines)} column {len(lines[-1])}")
    return config


def _pooling(args: Args, root: Path, config: dict, logger: Logger) -> str:
    pooling = args.text("pooling")
    if pooling is not None:
        return pooling.replace("-", "_")
    try:
        pool = json.loads((root / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        if "bert" not in config["model_type"]:
            raise StartupError("The `--pooling` arg is not set and we could not find a pooling configuration "
                               "(`1_Pooling/config.json`) for this model.",
                               "No such file or directory (os error 2)") from None
        logger.log(WARN, *ROUTER, 458, "The `--pooling` arg is not set and we could not find a pooling "
                   "configuration (`1_Pooling/config.json`) for this model but the model is a BERT variant. "
                   "Defaulting to `CLS` pooling.")
        return "cls"
    for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                      ("pooling_mode_lasttoken", "last_token")):
        if pool.get(key):
            return name
    return "cls"


def _max_input_length(root: Path, config: dict, logger: Logger) -> int:
    for name in ST_CONFIG_NAMES:
        try:
            return int(json.loads((root / name).read_text())["max_seq_length"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    positions = config.get("max_position_embeddings", config.get("max_trained_positions"))
    if not isinstance(positions, int):
        raise StartupError("At least any of `max_position_embeddings` or `max_trained_positions` (only applies "
                           "for NomicBERT), in that order of priority, should be defined in `config.json`.")
    logger.log(WARN, *ROUTER, 216, "Could not find a Sentence Transformers config")
    offset = 2 if config["model_type"] in ("xlm-roberta", "camembert", "roberta") else 0
    return positions - offset


def load_model(args: Args, root: Path, hub: bool, logger: Logger, forced_type: str | None) -> Model:
    """Read config.json and friends the way `text_embeddings_router::run` does, in the same order."""
    config = _read_config(root)
    architectures = config.get("architectures") or []
    reranker = any(str(a).endswith("ForSequenceClassification") for a in architectures) or (
        hub and looks_like_reranker(str(args.text("model_id"))))
    if forced_type in ("embedding", "reranker"):
        reranker = forced_type == "reranker"
    pooling = None if reranker else _pooling(args, root, config, logger)
    if not (root / "tokenizer.json").is_file():
        raise FileNotFoundError("tokenizer.json")
    return Model(root, reranker, pooling, _max_input_length(root, config, logger), config["model_type"])
