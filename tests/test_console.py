"""The output sink: secrets masked, ANSI stripped, one flushed line per event, prefixes for children."""

from __future__ import annotations

import io

from embed_launcher.reporting.console import Console, mask_secrets, strip_ansi


def test_every_secret_is_masked_longest_first() -> None:
    """A key that contains another secret is masked whole."""
    line = 'Args { api_key: Some("embed-abc123"), hf: "abc" }'
    assert mask_secrets(line, ("abc", "embed-abc123")) == 'Args { api_key: Some("***"), hf: "***" }'


def test_empty_secrets_are_ignored() -> None:
    """An empty key would otherwise mask every position of the line."""
    assert mask_secrets("hello", ("",)) == "hello"


def test_ansi_colour_codes_are_stripped() -> None:
    """TEI colours its lines even into a pipe; docker logs must stay greppable."""
    assert strip_ansi("\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m Ready") == "2026  INFO Ready"


def test_child_lines_get_their_prefix_and_errors_go_to_stderr() -> None:
    """[embed] prefix on stdout; Error lines on stderr; no colour off a terminal."""
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err, colour=False)
    console.child("embed", "Ready")
    console.error("Error: boom")
    console.info("Text embeddings server is ready")
    assert out.getvalue() == "[embed] Ready\nText embeddings server is ready\n"
    assert err.getvalue() == "Error: boom\n"


def test_colour_only_on_a_terminal() -> None:
    """Colour codes appear only when asked for (a TTY)."""
    out = io.StringIO()
    Console(out, io.StringIO(), colour=True).child("rerank", "x")
    assert "\x1b[" in out.getvalue()
