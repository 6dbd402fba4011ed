"""Tests for the pure configuration loader: defaults, sources, validation, warnings and docs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from embed_launcher.config.settings import (
    BOTH_DISABLED,
    DATA_DIR_DEFAULT,
    EMBED,
    ENV_FILE_DEFAULT,
    RERANK,
    TUNABLES,
    VARIABLES,
    ServiceSettings,
    Settings,
    env_file_path,
    load_settings,
    render_env_example,
    render_variable_table,
)
from embed_launcher.reporting.errors import ConfigError

ENV_FILE = Path("/embed.env")
CWD = Path("/srv/app")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARGS = (
    ("--max-client-batch-size", "512"),
    ("--max-concurrent-requests", "2048"),
    ("--payload-limit", "10000000"),
)


def load(env: dict[str, str] | None = None, text: str | None = None) -> Settings:
    """Load from an environment mapping and env-file text, as the CLI would."""
    return load_settings(env or {}, text, env_file=ENV_FILE, cwd=CWD)


def problems(env: dict[str, str] | None = None, text: str | None = None) -> list[str]:
    """The problems of a configuration that must be rejected."""
    with pytest.raises(ConfigError) as info:
        load(env, text)
    return info.value.problems


def args(service: ServiceSettings, flag: str) -> list[str]:
    """The values given to one TEI flag."""
    return [value for name, value in service.tei_args if name == flag]


# ---- defaults ----


def test_defaults_match_the_original_and_the_design() -> None:
    """With nothing set, every field has its documented default."""
    assert load() == Settings(
        data_dir=DATA_DIR_DEFAULT,
        env_file=ENV_FILE,
        tei_bin=None,
        host="0.0.0.0",
        server_addr=None,
        hf_token=None,
        local_only=False,
        backend="auto",
        data_persistent=None,
        ready_timeout_s=600.0,
        stop_timeout_s=8.0,
        restart_delay_s=1.0,
        restart_max_delay_s=60.0,
        start_retries=5,
        health_interval_s=10.0,
        health_failures=3,
        hang_timeout_s=600.0,
        backoff_reset_after_s=60.0,
        embed=ServiceSettings(EMBED, True, "BAAI/bge-small-en-v1.5", 8000, None, None, None,
                              18000, DEFAULT_ARGS),
        rerank=ServiceSettings(RERANK, False, "BAAI/bge-reranker-v2-m3", 8001, None, None, None,
                               18001, DEFAULT_ARGS, kind=RERANK),
        keys_file=DATA_DIR_DEFAULT / "keys.toml",
        gateway=True,  # issue 18: every client's dialect out of the box; EMBED_GATEWAY=false for TEI direct
        warnings=(),
    )


@pytest.mark.parametrize("variable", [v for v in VARIABLES if v.default], ids=lambda v: v.name)
def test_declared_default_is_the_loaded_default(variable: Any) -> None:
    """Setting a variable to its documented default changes nothing: docs and loader agree."""
    assert load({variable.name: variable.default}) == load()


def test_loader_never_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the mapping passed in counts (pure)."""
    monkeypatch.setenv("EMBED_PORT", "9999")
    assert load().embed.port == 8000


# ---- every variable ----

Getter = Callable[[Settings], object]
PARSED: list[tuple[str, str, Getter, object]] = [
    ("EMBED_ENABLED", "false", lambda s: s.embed.enabled, False),
    ("EMBED_MODEL", "intfloat/e5-small-v2", lambda s: s.embed.model, "intfloat/e5-small-v2"),
    ("EMBED_PORT", "9000", lambda s: s.embed.port, 9000),
    ("EMBED_API_KEY", "k1", lambda s: s.embed.api_key, "k1"),
    ("RERANK_ENABLED", "true", lambda s: s.rerank.enabled, True),
    ("RERANK_MODEL", "cross-encoder", lambda s: s.rerank.model, "cross-encoder"),
    ("RERANK_PORT", "9001", lambda s: s.rerank.port, 9001),
    ("RERANK_API_KEY", "k2", lambda s: s.rerank.api_key, "k2"),
    ("EMBED_HF_TOKEN", "hf_abc", lambda s: s.hf_token, "hf_abc"),
    ("EMBED_LOCAL_ONLY", "true", lambda s: s.local_only, True),
    ("EMBED_GATEWAY", "true", lambda s: s.gateway, True),
    ("EMBED_GATEWAY_WAIT", "5", lambda s: s.gateway_wait_s, 5.0),
    ("EMBED_API_KEYS_FILE", "/etc/keys.toml", lambda s: (s.keys_file, s.keys_file_given, s.gateway),
     (Path("/etc/keys.toml"), True, True)),
    ("EMBED_GATEWAY_BALANCE", "Round-Robin", lambda s: s.gateway_balance, "round-robin"),
    ("EMBED_REPLICAS", "3", lambda s: s.embed.replicas, 3),
    ("EMBED_REPLICAS", "AUTO", lambda s: s.embed.replicas, 0),
    ("RERANK_REPLICAS", "2", lambda s: s.rerank.replicas, 2),
    ("EMBED_GPUS", "0, 2,GPU-5f1c", lambda s: s.gpus, ("0", "2", "GPU-5f1c")),
    ("EMBED_GATEWAY_WORKERS", "2", lambda s: s.gateway_workers, 2),
    ("EMBED_GATEWAY_ACCESS_LOG", "yes", lambda s: s.gateway_access_log, True),
    ("EMBED_METRICS_AUTH", "true", lambda s: s.metrics_auth, True),
    ("EMBED_GATEWAY_MAX_INPUTS", "100", lambda s: s.gateway_max_inputs, 100),
    ("EMBED_GATEWAY_READ_TIMEOUT", "5s", lambda s: s.gateway_read_timeout_s, 5.0),
    ("EMBED_GATEWAY_UPSTREAM_TIMEOUT", "30", lambda s: s.gateway_upstream_timeout_s, 30.0),
    ("EMBED_TOKEN_INPUT", "decode", lambda s: s.token_input, "decode"),
    ("EMBED_LOG_FORMAT", "JSON", lambda s: s.log_format, "json"),
    ("EMBED_HOST", "127.0.0.1", lambda s: s.host, "127.0.0.1"),
    ("EMBED_SERVER_ADDR", "emb.example.com", lambda s: s.server_addr, "emb.example.com"),
    ("EMBED_PROMETHEUS_PORT", "9100", lambda s: s.embed.prometheus_port, 9100),
    ("RERANK_PROMETHEUS_PORT", "9101", lambda s: s.rerank.prometheus_port, 9101),
    ("EMBED_DATA_DIR", "/data", lambda s: s.data_dir, Path("/data")),
    ("EMBED_TEI_BIN", "/opt/tei/router", lambda s: s.tei_bin, "/opt/tei/router"),
    ("EMBED_BACKEND", "ONNX", lambda s: s.backend, "onnx"),
    ("EMBED_DATA_PERSISTENT", "yes", lambda s: s.data_persistent, True),
    ("EMBED_DATA_PERSISTENT", "off", lambda s: s.data_persistent, False),
    ("EMBED_DATA_PERSISTENT", "AUTO", lambda s: s.data_persistent, None),
    ("EMBED_READY_TIMEOUT", "0.2", lambda s: s.ready_timeout_s, 0.2),
    ("EMBED_STOP_TIMEOUT", "3s", lambda s: s.stop_timeout_s, 3.0),
    ("EMBED_RESTART_DELAY", "0.5", lambda s: s.restart_delay_s, 0.5),
    ("EMBED_RESTART_MAX_DELAY", "30", lambda s: s.restart_max_delay_s, 30.0),
    ("EMBED_START_RETRIES", "2", lambda s: s.start_retries, 2),
    ("EMBED_HEALTH_INTERVAL", ".5", lambda s: s.health_interval_s, 0.5),
    ("EMBED_HEALTH_FAILURES", "07", lambda s: s.health_failures, 7),
    ("EMBED_HANG_TIMEOUT", "90s", lambda s: s.hang_timeout_s, 90.0),
    ("EMBED_BACKOFF_RESET_AFTER", "30", lambda s: s.backoff_reset_after_s, 30.0),
    ("EMBED_DRAIN_TIMEOUT", "5", lambda s: s.drain_timeout_s, 5.0),
    ("EMBED_REVISION", "refs/pr/3", lambda s: s.embed.revision, "refs/pr/3"),
    ("RERANK_REVISION", "abc123", lambda s: s.rerank.revision, "abc123"),
    ("EMBED_SERVED_MODEL_NAME", "my model", lambda s: s.embed.served_model_name, "my model"),
    ("RERANK_SERVED_MODEL_NAME", "rr", lambda s: s.rerank.served_model_name, "rr"),
]
TUNED: list[tuple[str, str, list[str]]] = [
    ("MAX_CLIENT_BATCH_SIZE", "1024", ["1024"]),
    ("MAX_BATCH_TOKENS", "016384", ["16384"]),
    ("MAX_CONCURRENT_REQUESTS", "4096", ["4096"]),
    ("MAX_BATCH_REQUESTS", "8", ["8"]),
    ("PAYLOAD_LIMIT", "2000000", ["2000000"]),
    ("AUTO_TRUNCATE", "No", ["false"]),
    ("DTYPE", "Float16", ["float16"]),
    ("POOLING", "last_token", ["last-token"]),
    ("TOKENIZATION_WORKERS", "3", ["3"]),
    ("CORS_ALLOW_ORIGIN", "https://a.example, http://b:3000,", ["https://a.example", "http://b:3000"]),
    ("DEFAULT_PROMPT_NAME", "query", ["query"]),
]


def _flag_values(prefix: str, flag: str) -> Getter:
    """A getter for the values one service passes to one TEI flag."""
    return lambda s: args(s.embed if prefix == "EMBED_" else s.rerank, flag)


for _prefix in ("EMBED_", "RERANK_"):
    for _suffix, _raw, _values in TUNED:
        _flag = next(t.flag for t in TUNABLES if t.suffix == _suffix)
        PARSED.append((_prefix + _suffix, _raw, _flag_values(_prefix, _flag), _values))


@pytest.mark.parametrize(("name", "raw", "get", "expected"), PARSED, ids=[p[0] for p in PARSED])
def test_every_variable_is_parsed(name: str, raw: str, get: Getter, expected: object) -> None:
    """Each variable, set in the environment, lands normalised in its field."""
    base = {"RERANK_ENABLED": "true"} if name == "EMBED_ENABLED" else {}
    assert get(load(base | {name: raw})) == expected


def test_the_table_covers_every_declared_variable() -> None:
    """No variable is declared without a parse test (EMBED_ENV_FILE and EMBED_MODELS_FILE have their own)."""
    assert {p[0] for p in PARSED} | {"EMBED_ENV_FILE", "EMBED_MODELS_FILE"} == {v.name for v in VARIABLES}
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def test_tei_args_keep_table_order() -> None:
    """tei_args follow the tunables table, whatever order the variables were given in."""
    env = {f"RERANK_{suffix}": raw for suffix, raw, _ in reversed(TUNED)}
    flags = [flag for flag, _ in load(env).rerank.tei_args]
    order = [t.flag for t in TUNABLES]
    assert flags == sorted(flags, key=order.index)
    assert flags.count("--cors-allow-origin") == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, DATA_DIR_DEFAULT),
        ({"EMBED_DATA_DIR": "state"}, CWD / "state"),
        ({"EMBED_DATA_DIR": "../x"}, CWD / "../x"),
        ({"EMBED_DATA_DIR": "/abs/dir"}, Path("/abs/dir")),
    ],
)
def test_data_dir_is_made_absolute_against_cwd(env: dict[str, str], expected: Path) -> None:
    """A relative EMBED_DATA_DIR is taken from the working directory."""
    assert load(env).data_dir == expected


@pytest.mark.parametrize(("raw", "expected"), [("localhost", "127.0.0.1"), ("LOCALHOST", "127.0.0.1"),
                                               ("::", "::"), ("[::1]", "::1"), ("10.0.0.5", "10.0.0.5")])
def test_host_accepts_ip_literals_and_localhost(raw: str, expected: str) -> None:
    """EMBED_HOST is an IP literal for TEI; localhost becomes 127.0.0.1."""
    assert load({"EMBED_HOST": raw}).host == expected


@pytest.mark.parametrize("raw", ["203.0.113.5", "2001:db8::1", "emb", "emb.example.com."])
def test_server_addr_accepts_names_and_ips(raw: str) -> None:
    """EMBED_SERVER_ADDR takes a host name or an IP address."""
    assert load({"EMBED_SERVER_ADDR": raw}).server_addr == raw


# ---- sources and sanitising ----


def test_env_file_beats_the_environment() -> None:
    """Defaults < process environment < env file, per variable."""
    settings = load({"EMBED_PORT": "9000", "EMBED_MODEL": "env/model"}, "EMBED_PORT=9500\n")
    assert (settings.embed.port, settings.embed.model) == (9500, "env/model")


def test_empty_value_in_the_file_means_default() -> None:
    """An empty value in the file overrides the environment with the default (as sourcing did)."""
    assert load({"EMBED_PORT": "9000"}, "EMBED_PORT=\n").embed.port == 8000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  secret  ", "secret"),
        ('"secret"', "secret"),
        ("'secret'", "secret"),
        ("\"'secret'\"", "secret"),
        ("'\"secret\"'", '"secret"'),
        ('" spaced "', " spaced "),
        ('""', ""),
        ("''", ""),
        ('"', '"'),
        ("a'b'", "a'b'"),
    ],
)
def test_environment_values_are_sanitised_like_run_sh(raw: str, expected: str) -> None:
    """Trim, strip one pair of double quotes, then one pair of single quotes; no re-trim."""
    assert load({"EMBED_API_KEY": raw}).embed.api_key == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("EMBED_API_KEY=secret", "secret"),
        ('EMBED_API_KEY="secret"', "secret"),
        ("EMBED_API_KEY='secret'", "secret"),
        ("EMBED_API_KEY=\"'secret'\"", "secret"),
        ("EMBED_API_KEY='\"secret\"'", "secret"),
        ("EMBED_API_KEY=  secret  ", "secret"),
        ('EMBED_API_KEY="  secret  "', "secret"),
        ("EMBED_API_KEY=secret # a comment", "secret"),
        ("export EMBED_API_KEY=secret", "secret"),
        ("EMBED_API_KEY=", ""),
        ("EMBED_API_KEY=''", ""),
    ],
)
def test_env_file_values_are_parsed_then_sanitised(line: str, expected: str) -> None:
    """File values get shell-like quote handling, then the same sanitising."""
    assert load({}, line + "\n").embed.api_key == expected


@pytest.mark.parametrize(
    ("env", "text", "embed_key", "rerank_key"),
    [
        ({}, None, None, None),
        ({"EMBED_API_KEY": ""}, None, "", None),
        ({"EMBED_API_KEY": "k"}, None, "k", None),
        ({"EMBED_API_KEY": "k"}, "EMBED_API_KEY=\n", "", None),
        ({"EMBED_API_KEY": ""}, "EMBED_API_KEY=f\n", "f", None),
        ({}, "RERANK_API_KEY=' '\n", None, ""),
        ({"RERANK_API_KEY": "r"}, "# RERANK_API_KEY=\n", None, "r"),
    ],
)
def test_api_keys_distinguish_unset_from_empty(
    env: dict[str, str], text: str | None, embed_key: str | None, rerank_key: str | None
) -> None:
    """Absent = None, present but empty = "" (auth off); the file's value wins."""
    settings = load(env, text)
    assert (settings.embed.api_key, settings.rerank.api_key) == (embed_key, rerank_key)


@pytest.mark.parametrize("name", ["EMBED_HF_TOKEN", "EMBED_TEI_BIN", "EMBED_SERVER_ADDR",
                                  "EMBED_REVISION", "RERANK_SERVED_MODEL_NAME"])
def test_empty_optional_values_are_none(name: str) -> None:
    """An empty optional value is the same as no value."""
    assert load({name: ""}) == load()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ENV_FILE_DEFAULT),
        ({"EMBED_ENV_FILE": ""}, ENV_FILE_DEFAULT),
        ({"EMBED_ENV_FILE": " '/etc/embed.env' "}, Path("/etc/embed.env")),
        ({"EMBED_ENV_FILE": "conf/embed.env"}, Path("conf/embed.env")),
    ],
)
def test_env_file_path_comes_from_the_process_environment(
    environ: dict[str, str], expected: Path
) -> None:
    """EMBED_ENV_FILE is read from the environment only, default /embed.env."""
    assert env_file_path(environ) == expected


# ---- booleans ----

BOOLEANS: list[tuple[str, dict[str, str], Getter]] = [
    ("EMBED_ENABLED", {"RERANK_ENABLED": "1"}, lambda s: s.embed.enabled),
    ("RERANK_ENABLED", {}, lambda s: s.rerank.enabled),
    ("EMBED_LOCAL_ONLY", {}, lambda s: s.local_only),
    ("EMBED_AUTO_TRUNCATE", {}, lambda s: args(s.embed, "--auto-truncate") == ["true"]),
    ("RERANK_AUTO_TRUNCATE", {}, lambda s: args(s.rerank, "--auto-truncate") == ["true"]),
]
SPELLINGS = [("true", True), ("TRUE", True), ("True", True), ("1", True), ("yes", True),
             ("YES", True), ("on", True), ("On", True), ("false", False), ("False", False),
             ("FALSE", False), ("0", False), ("no", False), ("NO", False), ("off", False),
             ("Off", False)]


@pytest.mark.parametrize(("name", "base", "get"), BOOLEANS, ids=[b[0] for b in BOOLEANS])
@pytest.mark.parametrize(("raw", "expected"), SPELLINGS)
def test_boolean_spellings(name: str, base: dict[str, str], get: Getter, raw: str,
                           expected: bool) -> None:
    """true/false, 1/0, yes/no and on/off in any case; false really means false."""
    assert get(load(base | {name: raw})) is expected


@pytest.mark.parametrize(("name", "base", "get"), BOOLEANS, ids=[b[0] for b in BOOLEANS])
def test_empty_boolean_is_the_default(name: str, base: dict[str, str], get: Getter) -> None:
    """An empty boolean takes its default."""
    assert get(load(base | {name: ""})) == get(load(base))


@pytest.mark.parametrize("name", [b[0] for b in BOOLEANS])
@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "y"])
def test_other_boolean_values_are_rejected(name: str, raw: str) -> None:
    """Anything else is a problem naming the variable, the value and the spellings allowed."""
    assert problems({"RERANK_ENABLED": "true", name: raw})[0] == (
        f"{name} must be true or false (also 1/0, yes/no, on/off); got '{raw}'."
    )


# ---- validation messages ----

PORT_RULE = "must be an integer between 1 and 65535"
ERRORS: list[tuple[dict[str, str], str]] = [
    ({"EMBED_PORT": "abc"}, f"EMBED_PORT {PORT_RULE}; got 'abc'."),
    ({"EMBED_PORT": "0"}, f"EMBED_PORT {PORT_RULE}; got '0'."),
    ({"EMBED_PORT": "70000"}, f"EMBED_PORT {PORT_RULE}; got '70000'."),
    ({"EMBED_PORT": "-1"}, f"EMBED_PORT {PORT_RULE}; got '-1'."),
    ({"EMBED_PORT": "80 80"}, f"EMBED_PORT {PORT_RULE}; got '80 80'."),
    ({"RERANK_ENABLED": "1", "RERANK_PORT": "8o01"}, f"RERANK_PORT {PORT_RULE}; got '8o01'."),
    ({"EMBED_PROMETHEUS_PORT": "65536"}, f"EMBED_PROMETHEUS_PORT {PORT_RULE}; got '65536'."),
    ({"RERANK_ENABLED": "1", "RERANK_PORT": "8000"},
     "EMBED_PORT and RERANK_PORT cannot be the same (both set to 8000). Use different ports."),
    ({"RERANK_ENABLED": "1", "EMBED_PORT": "8000", "RERANK_PORT": "08000"},
     "EMBED_PORT and RERANK_PORT cannot be the same (both set to 8000). Use different ports."),
    ({"EMBED_ENABLED": "false"}, BOTH_DISABLED),
    ({"EMBED_ENABLED": "0", "RERANK_ENABLED": "off"}, BOTH_DISABLED),
    ({"EMBED_HOST": "myhost"}, "EMBED_HOST must be an IP address such as 0.0.0.0, 127.0.0.1 or "
                               ":: (or localhost), not a name; got 'myhost'."),
    ({"EMBED_HOST": "0.0.0.0:80"}, "EMBED_HOST must be an IP address such as 0.0.0.0, "
                                   "127.0.0.1 or :: (or localhost), not a name; got '0.0.0.0:80'."),
    ({"EMBED_HOST": "fe80::1%eth0"}, "EMBED_HOST must be an IP address such as 0.0.0.0, "
                                     "127.0.0.1 or :: (or localhost), not a name; got 'fe80::1%eth0'."),
    ({"EMBED_SERVER_ADDR": "http://emb.example.com"}, "EMBED_SERVER_ADDR must be a host name or "
     "IP address without scheme, port or spaces; got 'http://emb.example.com'."),
    ({"EMBED_SERVER_ADDR": "emb:8000"}, "EMBED_SERVER_ADDR must be a host name or IP address "
     "without scheme, port or spaces; got 'emb:8000'."),
    ({"EMBED_SERVER_ADDR": "1.2.3.999"}, "EMBED_SERVER_ADDR must be a host name or IP address "
     "without scheme, port or spaces; got '1.2.3.999'."),
    ({"EMBED_READY_TIMEOUT": "soon"}, "EMBED_READY_TIMEOUT must be a positive number of seconds "
     "(at most a year), e.g. 10 or 0.5s; got 'soon'."),
    ({"EMBED_STOP_TIMEOUT": "0"}, "EMBED_STOP_TIMEOUT must be a positive number of seconds "
     "(at most a year), e.g. 10 or 0.5s; got '0'."),
    ({"EMBED_HEALTH_INTERVAL": "10m"}, "EMBED_HEALTH_INTERVAL must be a positive number of "
     "seconds (at most a year), e.g. 10 or 0.5s; got '10m'."),
    ({"EMBED_RESTART_DELAY": "-1"}, "EMBED_RESTART_DELAY must be a positive number of seconds "
     "(at most a year), e.g. 10 or 0.5s; got '-1'."),
    ({"EMBED_READY_TIMEOUT": "31536001"}, "EMBED_READY_TIMEOUT must be a positive number of "
     "seconds (at most a year), e.g. 10 or 0.5s; got '31536001'."),
    ({"EMBED_STOP_TIMEOUT": "9" * 400}, "EMBED_STOP_TIMEOUT must be a positive number of "
     f"seconds (at most a year), e.g. 10 or 0.5s; got '{'9' * 400}'."),
    ({"EMBED_START_RETRIES": "9" * 5000}, "EMBED_START_RETRIES must be a whole number of at "
     f"least 1; got '{'9' * 5000}'."),
    ({"EMBED_READY_TIMEOUT": "inf"}, "EMBED_READY_TIMEOUT must be a positive number of seconds "
     "(at most a year), e.g. 10 or 0.5s; got 'inf'."),
    ({"EMBED_RESTART_DELAY": "10", "EMBED_RESTART_MAX_DELAY": "2s"},
     "EMBED_RESTART_MAX_DELAY must be at least EMBED_RESTART_DELAY (10); got 2."),
    ({"EMBED_BACKEND": "gpu"}, "EMBED_BACKEND must be one of auto, onnx, candle; got 'gpu'."),
    ({"EMBED_LOG_FORMAT": "yaml"}, "EMBED_LOG_FORMAT must be one of text, json; got 'yaml'."),
    ({"EMBED_DTYPE": "float64"},
     "EMBED_DTYPE must be one of float16, float32, bfloat16; got 'float64'."),
    ({"RERANK_POOLING": "max"},
     "RERANK_POOLING must be one of cls, mean, splade, last-token; got 'max'."),
    ({"EMBED_START_RETRIES": "0"}, "EMBED_START_RETRIES must be a whole number of at least 1; "
                                   "got '0'."),
    ({"EMBED_HEALTH_FAILURES": "three"}, "EMBED_HEALTH_FAILURES must be a whole number of at "
                                         "least 1; got 'three'."),
    ({"RERANK_MAX_CLIENT_BATCH_SIZE": "1.5"}, "RERANK_MAX_CLIENT_BATCH_SIZE must be a whole "
                                              "number of at least 1; got '1.5'."),
    ({"EMBED_PAYLOAD_LIMIT": "10MB"}, "EMBED_PAYLOAD_LIMIT must be a whole number of at least 1; "
                                      "got '10MB'."),
    ({"EMBED_CORS_ALLOW_ORIGIN": " , "}, "EMBED_CORS_ALLOW_ORIGIN must be a comma-separated "
     "list of origins, e.g. https://app.example.com; got ','."),
    ({"EMBED_REVISION": "my branch"}, "EMBED_REVISION must be a value without spaces; got "
                                      "'my branch'."),
]
MODEL_RULE = ("must be one or more Hugging Face model ids, comma-separated and each once, like "
              "BAAI/bge-small-en-v1.5 or BAAI/bge-small-en-v1.5,BAAI/bge-m3 (the first is the default)")
ERRORS += [({"EMBED_MODEL": bad}, f"EMBED_MODEL {MODEL_RULE}; got '{bad}'.")
           for bad in ("my model", "org/name/extra", "-org/name", "org/na--me", "org/", "http://x/y")]
ERRORS += [({"RERANK_MODEL": "a b"}, f"RERANK_MODEL {MODEL_RULE}; got 'a b'.")]


@pytest.mark.parametrize(("env", "message"), ERRORS, ids=[str(e[0])[:60] for e in ERRORS])
def test_each_problem_has_its_message(env: dict[str, str], message: str) -> None:
    """One bad input gives exactly one problem naming the variable, value and what is allowed."""
    assert problems(env) == [message]


def test_config_error_exits_2_and_lists_problems() -> None:
    """ConfigError carries exit code 2 and one bullet per problem."""
    with pytest.raises(ConfigError) as info:
        load({"EMBED_PORT": "abc"})
    assert info.value.exit_code == 2
    assert info.value.message.endswith("  - EMBED_PORT must be an integer between 1 and 65535; "
                                       "got 'abc'.")


def test_every_problem_is_reported_at_once() -> None:
    """Syntax errors in the file and bad values from both sources arrive in one ConfigError."""
    env = {"EMBED_PORT": "abc", "EMBED_HOST": "box", "EMBED_DTYPE": "f8"}
    text = "oops\nEMBED_START_RETRIES=0\nEMBED_LOCAL_ONLY=sure\n"
    found = problems(env, text)
    assert found[0] == "EMBED_ENV_FILE /embed.env line 1: cannot parse 'oops' (expected KEY=value)"
    named = [p.split()[0] for p in found[1:]]  # in documentation order, after the syntax errors
    assert named == ["EMBED_PORT", "EMBED_LOCAL_ONLY", "EMBED_HOST", "EMBED_START_RETRIES",
                     "EMBED_DTYPE"]


def test_a_rejected_port_causes_no_clash_report() -> None:
    """A bad port is reported once, not again as a clash through its fallback default."""
    assert problems({"RERANK_ENABLED": "1", "EMBED_PORT": "x", "RERANK_PORT": "8000"}) == [
        f"EMBED_PORT {PORT_RULE}; got 'x'."
    ]


def test_ports_of_a_disabled_service_are_still_validated() -> None:
    """A bad value is a bad value even for a disabled service."""
    assert problems({"RERANK_PORT": "abc"}) == [f"RERANK_PORT {PORT_RULE}; got 'abc'."]


SECRET_HIDDEN = "cannot parse the line starting with '{}' (the rest is not shown: it may be a secret)"


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [
        ("this is not an assignment\n", 1, SECRET_HIDDEN.format("this")),
        ("# comment\nEMBED_MODEL=x/y\n\n\n  bad line  \n", 5, SECRET_HIDDEN.format("bad")),
        ("EMBED_PORT='8000\n", 1, SECRET_HIDDEN.format("EMBED_PORT")),
        ("A=1\r\n\r\nEMBED_MODEL\r\n", 3, "cannot parse 'EMBED_MODEL'"),
        ("EMBED-MODEL=x/y\n", 1, SECRET_HIDDEN.format("EMBED-MODEL")),
        ("EMBED_PORT=8000\nexport\n", 2, "cannot parse 'export'"),
        ("EMBED_API_KEY: embed-123\n", 1, SECRET_HIDDEN.format("EMBED_API_KEY")),
    ],
)
def test_malformed_env_file_line_names_file_and_line(text: str, line: int, shown: str) -> None:
    """Each unparseable statement is a problem with the file, its line number and its first word only."""
    assert problems({}, text) == [f"EMBED_ENV_FILE /embed.env line {line}: {shown} (expected KEY=value)"]


def test_env_file_is_data_not_shell() -> None:
    """Command substitutions are kept as text, never run."""
    assert load({}, "EMBED_API_KEY=$(touch /tmp/pwned)\n").embed.api_key == "$(touch /tmp/pwned)"


def test_missing_env_file_is_fine() -> None:
    """env_file_text=None (no file) loads the environment alone."""
    assert load({"EMBED_PORT": "9000"}, None).embed.port == 9000


# ---- services and ports ----


@pytest.mark.parametrize(
    ("env", "rerank_port"),
    [
        ({"RERANK_ENABLED": "1"}, 8001),
        ({"RERANK_ENABLED": "1", "EMBED_ENABLED": "0"}, 8000),
        ({"RERANK_ENABLED": "1", "EMBED_ENABLED": "0", "RERANK_PORT": "9000"}, 9000),
        ({"RERANK_ENABLED": "1", "EMBED_PORT": "9000"}, 8001),
    ],
)
def test_rerank_port_default_follows_embeddings(env: dict[str, str], rerank_port: int) -> None:
    """RERANK_PORT defaults to 8001, or 8000 when embeddings are disabled."""
    assert load(env).rerank.port == rerank_port


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, [EMBED]),
        ({"RERANK_ENABLED": "1"}, [EMBED, RERANK]),
        ({"RERANK_ENABLED": "1", "EMBED_ENABLED": "0"}, [RERANK]),
    ],
)
def test_services_lists_enabled_services_embeddings_first(
    env: dict[str, str], names: list[str]
) -> None:
    """Settings.services holds the enabled services in a fixed order."""
    assert [s.name for s in load(env).services] == names


@pytest.mark.parametrize(
    ("env", "embed_metrics", "rerank_metrics"),
    [
        ({}, 18000, 18001),
        ({"EMBED_PORT": "60000"}, 50000, 18001),
        ({"EMBED_PORT": "55535"}, 65535, 18001),
        ({"EMBED_PORT": "55536"}, 45536, 18001),
        ({"EMBED_PROMETHEUS_PORT": "9100"}, 9100, 18001),
        ({"EMBED_ENABLED": "0", "RERANK_ENABLED": "1"}, 18000, 18000),
    ],
)
def test_prometheus_port_defaults(env: dict[str, str], embed_metrics: int,
                                  rerank_metrics: int) -> None:
    """The Prometheus port defaults to the service port + 10000, or - 10000 past 65535."""
    settings = load(env)
    assert (settings.embed.prometheus_port, settings.rerank.prometheus_port) == (
        embed_metrics, rerank_metrics)


PROM = ": TEI binds the Prometheus port at start. Set "
PROMETHEUS_CLASHES: list[tuple[dict[str, str], str]] = [
    ({"EMBED_PROMETHEUS_PORT": "8000"},
     f"EMBED_PORT and EMBED_PROMETHEUS_PORT cannot be the same (both 8000){PROM}"
     "EMBED_PROMETHEUS_PORT to a free port."),
    ({"RERANK_ENABLED": "1", "EMBED_PROMETHEUS_PORT": "8001"},
     f"EMBED_PROMETHEUS_PORT and RERANK_PORT cannot be the same (both 8001){PROM}"
     "EMBED_PROMETHEUS_PORT to a free port."),
    ({"RERANK_ENABLED": "1", "EMBED_PORT": "18001"},
     f"EMBED_PORT and RERANK_PROMETHEUS_PORT cannot be the same (both 18001){PROM}"
     "RERANK_PROMETHEUS_PORT to a free port (its default follows RERANK_PORT)."),
    ({"RERANK_ENABLED": "1", "EMBED_PROMETHEUS_PORT": "9100", "RERANK_PROMETHEUS_PORT": "9100"},
     f"EMBED_PROMETHEUS_PORT and RERANK_PROMETHEUS_PORT cannot be the same (both 9100){PROM}"
     "RERANK_PROMETHEUS_PORT to a free port."),
]


@pytest.mark.parametrize(("env", "message"), PROMETHEUS_CLASHES)
def test_prometheus_port_clashes(env: dict[str, str], message: str) -> None:
    """TEI binds the Prometheus port at start, so it must not collide with any other listener."""
    assert problems(env) == [message]


@pytest.mark.parametrize(
    ("env", "enabled", "listeners"),
    [
        ({"EMBED_PROMETHEUS_PORT": "8001"}, ["embed"], [8000, 8001]),  # reranking is disabled
        ({"EMBED_ENABLED": "0", "RERANK_ENABLED": "1", "EMBED_PROMETHEUS_PORT": "8000"}, ["rerank"], [8000, 18000]),
        ({"RERANK_ENABLED": "1", "EMBED_PORT": "9000", "RERANK_PORT": "9001"}, ["embed", "rerank"],
         [9000, 9001, 19000, 19001]),
    ],
)
def test_ports_of_disabled_services_do_not_clash(env: dict[str, str], enabled: list[str], listeners: list[int]) -> None:
    """Only listeners of enabled services are compared: these load, with exactly these services listening."""
    settings = load(env)
    assert [s.name for s in settings.services] == enabled
    ports = sorted(p for s in settings.services for p in (s.port, s.prometheus_port))
    assert ports == sorted(listeners)


# ---- warnings ----


@pytest.mark.parametrize(
    ("env", "text", "warning"),
    [
        ({}, "EMBED_MODLE=x\n",
         "unknown variable EMBED_MODLE in /embed.env (ignored; did you mean EMBED_MODEL?)"),
        ({"RERANK_PROT": "9"}, None,
         "unknown variable RERANK_PROT in the environment (ignored; did you mean RERANK_PORT?)"),
        ({}, "embed_port=9000\n",
         "unknown variable embed_port in /embed.env (ignored; did you mean EMBED_PORT?)"),
        ({}, "EMBED_QQQQQQQQQQQQQQQQ=1\n",
         "unknown variable EMBED_QQQQQQQQQQQQQQQQ in /embed.env (ignored)"),
        ({}, "EMBED_ENV_FILE=/other.env\n", "EMBED_ENV_FILE in /embed.env has no effect "
         "(ignored; set it in the process environment)"),
        ({"EMBED_MAX_CLIENT_BATCH_SIZE": "4096"}, None,
         "EMBED_MAX_CLIENT_BATCH_SIZE (4096) exceeds EMBED_MAX_CONCURRENT_REQUESTS (2048): TEI "
         "counts one permit per input, so full batches will be refused as overloaded"),
    ],
)
def test_warnings(env: dict[str, str], text: str | None, warning: str) -> None:
    """Typos, misplaced and unwise settings are warned about, and loading goes on."""
    assert load(env, text).warnings == (warning,)


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"EMBED_DISABLE_USAGE_COUNTS": "1", "EMBED_USAGE_BASE_URL": "http://x"}, None),
        ({}, "EMBED_DISABLE_USAGE_COUNTS=1\nEMBED_USAGE_BASE_URL=http://x\n"),
        ({"PATH": "/bin", "HOSTNAME": "abc", "EMBEDDED": "1"}, "OTHER=1\n"),
        ({"RERANK_MAX_CLIENT_BATCH_SIZE": "4096"}, None),  # reranking disabled
    ],
)
def test_no_warning(env: dict[str, str], text: str | None) -> None:
    """The original's telemetry switches, foreign names and disabled services stay quiet."""
    assert load(env, text).warnings == ()


# ---- generated documentation ----


def test_env_example_file_is_in_sync() -> None:
    """embed.env.example at the repo root is exactly render_env_example()."""
    assert (REPO / "embed.env.example").read_text() == render_env_example()


def test_env_example_lists_every_variable_commented_out() -> None:
    """Every variable appears once as a commented assignment; nothing is active."""
    lines = render_env_example().splitlines()
    assert all(not line or line.startswith("#") for line in lines)
    for v in VARIABLES:
        assert sum(line.startswith(f"# {v.name}=") for line in lines) == 1, v.name


def test_uncommented_example_is_a_valid_configuration() -> None:
    """Uncommenting every line of the example gives a loadable configuration."""
    text = "\n".join(line[2:] for line in render_env_example().splitlines()
                     if line.startswith("# ") and "=" in line.split()[1])
    models_file = (REPO / "models.example.toml").read_text()
    settings = load_settings({"RERANK_ENABLED": "1"}, text.replace("RERANK_ENABLED=false", ""), env_file=ENV_FILE,
                             cwd=CWD, read_file=lambda path: models_file)
    # every name in it is known and every value sensible; only the file's own location cannot be set in it
    assert settings.warnings == ("EMBED_ENV_FILE in /embed.env has no effect (ignored; set it in the process "
                                 "environment)",)
    assert settings.embed.enabled and settings.rerank.enabled


def test_variable_table_has_a_row_per_variable() -> None:
    """The README table lists every variable with its default."""
    table = render_variable_table()
    assert table.startswith("| Variable | Default | Meaning |\n|---|---|---|\n")
    assert "| `RERANK_PORT` | `8001` (8000 when embeddings are disabled) | " in table
    for v in VARIABLES:
        assert table.count(f"| `{v.name}` |") == 1, v.name
        assert "|" not in v.meaning + v.note


def test_tei_arg_reads_one_flag_of_a_service() -> None:
    """The value a service passes for a TEI flag, or None when the flag is not passed."""
    settings = load({"EMBED_DTYPE": "float16"})
    assert settings.embed.tei_arg("--dtype") == "float16"
    assert settings.embed.tei_arg("--pooling") is None
    assert settings.rerank.tei_arg("--dtype") is None


def test_a_keys_file_and_no_gateway_is_refused() -> None:
    """The keys file's keys are checked by the gateway: EMBED_GATEWAY=false would silently ignore them."""
    with pytest.raises(ConfigError, match="EMBED_API_KEYS_FILE is set, but EMBED_GATEWAY is false"):
        load({"EMBED_API_KEYS_FILE": "/etc/keys.toml", "EMBED_GATEWAY": "false"})
