"""The banners users grep: exact titles of the original, endpoints, curl examples, never a key."""

from __future__ import annotations

import pytest

from embed_launcher.startup.banner import RULE, Endpoint, not_persistent_note, ready_banner, start_banner

EMBED = Endpoint("embed", "Embeddings", "BAAI/bge-small-en-v1.5", 8000, auth=True)
RERANK = Endpoint("rerank", "Reranker", "BAAI/bge-reranker-v2-m3", 8001, auth=False)


@pytest.mark.parametrize(
    ("services", "title"),
    [
        ((EMBED,), " Text embeddings server is ready"),
        ((RERANK,), " Reranking server is ready"),
        ((EMBED, RERANK), " Text embeddings & reranking server is ready"),
    ],
)
def test_ready_title_is_the_originals_line(services: tuple[Endpoint, ...], title: str) -> None:
    """The second line of the banner is exactly what users grep for, between 59-wide rules."""
    lines = ready_banner(services, "203.0.113.7")
    assert lines[:3] == [RULE, title, RULE] and len(RULE) == 59


def test_ready_banner_shows_endpoints_examples_and_auth_but_no_key() -> None:
    """Endpoints with the advertised address; auth is described by variable name only."""
    text = "\n".join(ready_banner((EMBED, RERANK), "203.0.113.7"))
    assert "   Endpoint: http://203.0.113.7:8000" in text and "   Endpoint: http://203.0.113.7:8001" in text
    assert "curl http://203.0.113.7:8000/v1/embeddings" in text and "curl http://203.0.113.7:8001/rerank" in text
    assert "Embeddings API key authentication is enabled." in text
    assert 'Include header:  -H "Authorization: Bearer $EMBED_API_KEY"' in text
    assert "Reranker API key authentication is enabled." not in text  # reranker has auth off here
    assert "embed-" not in text and text.rstrip().endswith("Setup complete.")


def test_reranker_alone_has_no_section_header() -> None:
    """Like the original: the " Reranker:" header appears only when both services run."""
    assert " Reranker:" not in ready_banner((RERANK,), "h")
    assert " Reranker:" in ready_banner((EMBED, RERANK), "h")


def test_start_banner_lists_services_and_local_only_mode() -> None:
    """Starting services... then one line per service, then the mode."""
    lines = start_banner((EMBED, RERANK), notices=("Note: x",), local_only=True)
    assert lines[2:] == [
        "Note: x",
        "Starting services...",
        "  Embeddings: model=BAAI/bge-small-en-v1.5  port=8000",
        "  Reranker:   model=BAAI/bge-reranker-v2-m3  port=8001",
        "  Mode: local-only (no HuggingFace downloads)",
    ]


def test_not_persistent_note_names_the_directory() -> None:
    """The original's three-line note, for whatever data directory is configured."""
    assert not_persistent_note("/data")[0] == "Note: /data is not mounted. Model files will be lost on"
