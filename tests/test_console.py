"""The output sink: secrets masked, ANSI stripped, one flushed line per event, prefixes for children."""

from __future__ import annotations

import io
import json

from embed_launcher.reporting.console import Console, mask_secrets, strip_ansi
from embed_launcher.reporting.logline import json_line, message_of


def test_every_secret_is_masked_longest_first() -> None:
    """A key that contains another secret is masked whole."""
    line = 'Args { api_key: Some("embed-abc123"), hf: "abc" }'
    assert mask_secrets(line, ("abc", "embed-abc123")) == 'Args { api_key: Some("***"), hf: "***" }'


def test_a_secret_is_masked_inside_json_too() -> None:
    """TEI's --json-output escapes a key's quotes and backslashes in its Args line: masked all the same."""
    key = 'sec"ret\\42'
    line = json.dumps({"message": f'Args {{ api_key: Some("{key}") }}'})
    masked = mask_secrets(line, (key,))
    assert "sec" not in masked and json.loads(masked) == {"message": 'Args { api_key: Some("***") }'}


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


def test_json_format_writes_one_object_per_line_with_its_level() -> None:
    """EMBED_LOG_FORMAT=json: the launcher's lines parse, with ts, level, logger and msg; no colour."""
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err, colour=True)
    console.use_format("json")
    console.lines(["Text embeddings server is ready", "", "  Port: 8000"])
    console.warn("Warning: disk full")
    console.error("Error: boom\n  fix it")
    infos = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["msg"] for r in infos] == ["Text embeddings server is ready", "  Port: 8000"]  # no blank spacers
    assert all(r["level"] == "info" and r["logger"] == "embed-launcher" and r["ts"].endswith("Z") for r in infos)
    warning, error = (json.loads(line) for line in err.getvalue().splitlines())
    assert (warning["level"], warning["msg"]) == ("warning", "Warning: disk full")
    assert (error["level"], error["msg"]) == ("error", "Error: boom\n  fix it")
    assert "\x1b[" not in out.getvalue() + err.getvalue()
    assert set(infos[0]) == {"ts", "level", "logger", "msg"}  # request keys without a value are left out


def test_json_child_lines_are_relayed_verbatim_or_wrapped() -> None:
    """A child line that already is a JSON object (TEI's --json-output) goes out as it is; others are wrapped."""
    out = io.StringIO()
    console = Console(out, io.StringIO(), json=True)
    tei = '{"timestamp":"2026-12-06T00:00:00.000000Z","level":"INFO","message":"Ready","target":"t"}'
    console.child("embed#1", tei)
    console.child("embed#1", "Error: Could not start backend")
    first, second = out.getvalue().splitlines()
    assert first == tei
    wrapped = json.loads(second)
    assert (wrapped["level"], wrapped["logger"]) == ("info", "embed#1")
    assert wrapped["msg"] == "Error: Could not start backend"


def test_message_of_reads_tei_and_our_json_lines() -> None:
    """The launcher matches TEI's lines on their message, in either format."""
    assert message_of('{"timestamp":"x","level":"INFO","message":"Ready","target":"t"}') == "Ready"
    assert message_of('{"timestamp":"x","level":"INFO","fields":{"message":"Ready"},"target":"t"}') == "Ready"
    assert message_of('{"ts":"x","level":"info","logger":"gateway","msg":"Gateway ready on a"}') == "Gateway ready on a"
    assert message_of("2026 INFO text_embeddings_router: Ready") == "2026 INFO text_embeddings_router: Ready"
    assert message_of("{not json}") == "{not json}"


def test_json_line_leaves_out_absent_values() -> None:
    record = json.loads(json_line("info", "gateway.access", "GET /health", now=0.5, request_id="ab", model=None))
    assert record == {"ts": "1970-01-01T00:00:00.500Z", "level": "info", "logger": "gateway.access",
                      "msg": "GET /health", "request_id": "ab"}
