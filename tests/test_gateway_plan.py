"""The gateway's plan: its configuration follows the settings, and its drain fits the supervisor's stop timeout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embed_launcher.config.settings import Settings, load_settings
from embed_launcher.gateway.config import GatewayConfig
from embed_launcher.gateway.serve import DRAIN_S
from embed_launcher.supervision.gateway_plan import CLOSE_MARGIN_S, drain_s, gateway_config, gateway_listen
from embed_launcher.supervision.plan import build_plan

MANY = {"EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3", "RERANK_ENABLED": "true"}


def settings(**env: str) -> Settings:
    return load_settings({**MANY, **env}, None, env_file=Path("/nonexistent.env"), cwd=Path("/srv"))


def planned_config(**env: str) -> GatewayConfig:
    s = settings(**env)
    ports = {svc.name: (20000 + 2 * i, 20001 + 2 * i) for i, svc in enumerate(s.services)}
    specs = build_plan(s, tei_bin="tei", keys={}, model_sources={}, parent_env={}, internal_ports=ports)
    return GatewayConfig.from_json(specs[-1].env["EMBED_GATEWAY_CONFIG"])


@pytest.mark.parametrize("stop_timeout", ["0.5", "1", "3", "8", "10", "30"])
def test_the_gateways_drain_fits_inside_the_stop_timeout(stop_timeout: str) -> None:
    """The supervisor SIGKILLs the gateway EMBED_STOP_TIMEOUT after SIGTERM: the drain ends well before."""
    config = planned_config(EMBED_STOP_TIMEOUT=stop_timeout)
    stop = float(stop_timeout)
    assert 0 < config.drain_s <= stop - min(CLOSE_MARGIN_S, stop / 2)
    assert config.drain_s <= DRAIN_S
    assert drain_s(float(stop_timeout)) == config.drain_s


def test_the_default_stop_timeout_leaves_the_full_drain() -> None:
    assert planned_config().drain_s == DRAIN_S == 5.0


def test_the_new_gateway_variables_reach_its_configuration() -> None:
    defaults = planned_config()
    assert (defaults.max_inputs, defaults.read_timeout_s, defaults.upstream_timeout_s) == (8192, 60.0, 600.0)
    tuned = planned_config(EMBED_GATEWAY_MAX_INPUTS="100", EMBED_GATEWAY_READ_TIMEOUT="5",
                           EMBED_GATEWAY_UPSTREAM_TIMEOUT="30s")
    assert (tuned.max_inputs, tuned.read_timeout_s, tuned.upstream_timeout_s) == (100, 5.0, 30.0)


def test_the_config_is_built_by_gateway_plan_alone() -> None:
    """gateway_config takes any children with a name and a port (no import of plan's ChildSpec)."""

    class Child:
        def __init__(self, name: str, port: int) -> None:
            self.name, self.port = name, port

    s = settings()
    children = [Child(svc.name, 30000 + i) for i, svc in enumerate(s.services)]
    config = gateway_config(s, children, created=7)
    assert [m.upstream for m in config.models] == ["http://127.0.0.1:30000", "http://127.0.0.1:30001",
                                                   "http://127.0.0.1:30002"]
    assert config.listen == gateway_listen(s) and config.created == 7
    assert json.loads(config.to_json())["max_inputs"] == 8192


def test_metrics_auth_and_the_status_file_reach_the_gateway() -> None:
    """/metrics reads the launcher's live status in the data directory; EMBED_METRICS_AUTH closes it."""
    defaults = planned_config(EMBED_DATA_DIR="/data")
    assert defaults.status_file == "/data/.status.json" and not defaults.metrics_auth and defaults.metrics
    assert planned_config(EMBED_METRICS_AUTH="true").metrics_auth


def test_the_log_format_reaches_tei_and_the_gateway() -> None:
    """EMBED_LOG_FORMAT=json: each TEI gets its own --json-output, the gateway its log_format; text adds nothing."""
    for value, flag, fmt in (("json", True, "json"), ("text", False, "text")):
        s = settings(EMBED_LOG_FORMAT=value)
        ports = {svc.name: (20000 + 2 * i, 20001 + 2 * i) for i, svc in enumerate(s.services)}
        *teis, gateway = build_plan(s, tei_bin="tei", keys={}, model_sources={}, parent_env={}, internal_ports=ports)
        assert all(("--json-output" in t.argv) is flag for t in teis)
        assert GatewayConfig.from_json(gateway.env["EMBED_GATEWAY_CONFIG"]).log_format == fmt


def test_with_the_gateway_off_tei_keeps_its_ports_and_the_gateway_serves_metrics_on_the_prometheus_ports() -> None:
    """EMBED_GATEWAY=false: TEI itself on the public ports (its transient Prometheus bind on an ephemeral port,
    tei-contract §3.3), and the gateway only for /metrics, on EMBED_PROMETHEUS_PORT and RERANK_PROMETHEUS_PORT."""
    s = load_settings({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "false", "EMBED_HOST": "0.0.0.0",
                       "EMBED_PROMETHEUS_PORT": "9100", "RERANK_PROMETHEUS_PORT": "9101", "EMBED_GATEWAY_WORKERS": "4"},
                      None, env_file=Path("/nonexistent.env"), cwd=Path("/srv"))
    *teis, gateway = build_plan(s, tei_bin="tei", keys={"embed": "k", "rerank": "r"}, model_sources={},
                                parent_env={})
    assert [t.name for t in teis] == ["embed", "rerank"] and gateway.name == "gateway"
    for tei, port in zip(teis, (s.embed.port, s.rerank.port), strict=True):
        argv = list(tei.argv)
        assert argv[argv.index("--hostname") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == str(port)
        assert argv[argv.index("--prometheus-port") + 1] == "0"  # the metrics port is the gateway's now
    config = GatewayConfig.from_json(gateway.env["EMBED_GATEWAY_CONFIG"])
    assert [(li.host, li.port, li.routes) for li in config.listen] == [("0.0.0.0", 9100, "metrics"),
                                                                       ("0.0.0.0", 9101, "metrics")]
    assert [(m.kind, m.upstream) for m in config.models] == [("embed", f"http://127.0.0.1:{s.embed.port}"),
                                                             ("rerank", f"http://127.0.0.1:{s.rerank.port}")]
    assert config.workers == 1  # a scrape every few seconds: one process is plenty
    assert gateway.health_url == "http://127.0.0.1:9100/health"
    assert gateway.env["EMBED_GATEWAY_EMBED_KEY"] == "k"  # TEI's /info needs it; EMBED_METRICS_AUTH accepts it


def test_with_the_gateway_off_a_tei_bound_to_one_address_is_scraped_there() -> None:
    s = load_settings({"EMBED_GATEWAY": "false", "EMBED_HOST": "10.1.2.3"}, None, env_file=Path("/nonexistent.env"),
                      cwd=Path("/srv"))
    *_, gateway = build_plan(s, tei_bin="tei", keys={}, model_sources={}, parent_env={})
    config = GatewayConfig.from_json(gateway.env["EMBED_GATEWAY_CONFIG"])
    assert config.models[0].upstream == f"http://10.1.2.3:{s.embed.port}"
    assert config.listen[0].host == "10.1.2.3" and config.listen[0].port == s.embed.prometheus_port
