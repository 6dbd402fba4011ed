"""TEI's failure lines become one actionable hint; unknown failures get none."""

from __future__ import annotations

import pytest

from embed_launcher.supervision.hints import hint_for, says_ort_refused


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [
                " ERROR text_embeddings_backend: backends/src/lib.rs:388: Could not start ORT backend: model.onnx",
                "Error: Could not create backend",
                "Caused by:",
                "    Weights not found: model.safetensors",
            ],
            "EMBED_BACKEND=candle",
        ),
        (
            ["Error: Could not bind TCP Listener on 0.0.0.0:8000", "    Address already in use (os error 98)"],
            "EMBED_PORT",
        ),
        (["Error: failed to build prometheus recorder"], "EMBED_PROMETHEUS_PORT"),
        (
            [
                "thread 'main' panicked at router/src/lib.rs:151:",
                "tokenizer.json not found. ... only supports fast tokenizers",
            ],
            "tokenizer.json",
        ),
        (["Error: The `--pooling` arg is not set and we could not find a pooling configuration"], "EMBED_POOLING"),
        (["Error: Model backend is not healthy", "Caused by:", "    CUDA out of memory"], "EMBED_MAX_BATCH_TOKENS"),
    ],
)
def test_known_tei_failures_get_their_hint(lines: list[str], expected: str) -> None:
    """Each known failure maps to advice naming the variable (or action) that fixes it."""
    advice = hint_for(lines)
    assert advice is not None and expected in advice


def test_an_ort_error_alone_is_not_enough_for_the_backend_hint() -> None:
    """TEI logs the ORT error and then starts candle fine when safetensors are there: no hint."""
    assert hint_for([" ERROR ...: Could not start ORT backend: x", " INFO ...: Ready"]) is None


def test_unknown_failures_get_no_hint() -> None:
    """No guessing: an unrecognised failure is shown as TEI's lines only."""
    assert hint_for(["Error: something new"]) is None
    assert hint_for([]) is None


def test_ort_refusal_needs_both_signs() -> None:
    """The ORT error alone (candle then loads fine) is not a refusal; with "Weights not found" it is."""
    assert not says_ort_refused(["ERROR ...: Could not start ORT backend: x"])
    assert says_ort_refused(["ERROR ...: Could not start ORT backend: x", "    Weights not found: y"])
