"""What to do about a TEI that will not start: its last output lines mapped to one actionable hint (pure)."""

from __future__ import annotations

from collections.abc import Sequence

ORT_REFUSED_SIGNS = ("Could not start ORT backend", "Weights not found")

# (every substring that must appear in TEI's last lines, the advice). First match wins.
# The texts are TEI's own (tei-contract §3): stable across the 1.9 releases we pin.
HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ORT_REFUSED_SIGNS,
        "TEI's ONNX backend could not run this model and no safetensors were downloaded: "
        "set EMBED_BACKEND=candle and restart.",
    ),
    (
        ("Could not bind TCP Listener",),
        "Another process took the port after the launcher checked it: free it, or set EMBED_PORT / RERANK_PORT.",
    ),
    (
        ("failed to build prometheus recorder",),
        "The Prometheus port TEI binds at start is taken: set EMBED_PROMETHEUS_PORT / RERANK_PROMETHEUS_PORT.",
    ),
    (
        ("only supports fast tokenizers",),
        "This model has no tokenizer.json (fast tokenizer), which TEI requires: choose another model.",
    ),
    (
        ("`--pooling` arg is not set",),
        "TEI cannot tell how to pool this model: set EMBED_POOLING (cls, mean, splade or last-token).",
    ),
    (
        ("Model backend is not healthy",),
        "The model failed its warm-up (often out of memory): lower EMBED_MAX_BATCH_TOKENS or give it more memory.",
    ),
)


CUDA_OOM_SIGNS = ("CUDA_ERROR_OUT_OF_MEMORY", "CUDA out of memory", "cudaErrorMemoryAllocation")


def says_cuda_oom(last_lines: Sequence[str]) -> bool:
    """TEI ran out of GPU memory (candle's driver error, or the python backend's torch error)."""
    text = "\n".join(last_lines)
    return any(sign.lower() in text.lower() for sign in CUDA_OOM_SIGNS)


def says_ort_refused(last_lines: Sequence[str]) -> bool:
    """TEI's ONNX backend could not run the model and candle found no weights to fall back on."""
    text = "\n".join(last_lines)
    return all(sign in text for sign in ORT_REFUSED_SIGNS)


def hint_for(last_lines: Sequence[str]) -> str | None:
    """The advice for TEI's last output, or None when nothing known matches."""
    text = "\n".join(last_lines)
    for needles, advice in HINTS:
        if all(needle in text for needle in needles):
            return advice
    return None
