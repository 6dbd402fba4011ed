"""The plan: settings -> TEI child specs; secrets stay off argv, children never collide, env is scrubbed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embed_launcher.config.settings import Settings, load_settings
from embed_launcher.supervision.plan import ChildSpec, build_plan, probe_host

KEY, RERANK_KEY, TOKEN = "embed-" + "a" * 48, "rerank-secret-key", "hf_secret_token_value"


def settings(**env: str) -> Settings:
    return load_settings(env, None, env_file=Path("/nonexistent.env"), cwd=Path("/srv"))


def plan(
    env: dict[str, str], parent: dict[str, str] | None = None, sources: dict[str, str] | None = None
) -> tuple[ChildSpec, ...]:
    return build_plan(
        settings(**env),
        tei_bin="/usr/local/bin/text-embeddings-router",
        keys={"embed": KEY, "rerank": RERANK_KEY},
        model_sources=sources or {},
        parent_env=parent or {"PATH": "/usr/bin"},
    )


def flag(argv: tuple[str, ...], name: str) -> list[str]:
    """Every value given for ``name`` on the command line."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_one_spec_per_enabled_service_embeddings_first() -> None:
    """Enabled services become specs in a fixed order; disabled ones are absent."""
    assert [s.name for s in plan({"RERANK_ENABLED": "true"})] == ["embed", "rerank"]
    assert [s.name for s in plan({})] == ["embed"]
    assert [s.name for s in plan({"EMBED_ENABLED": "false", "RERANK_ENABLED": "true"})] == ["rerank"]


def test_no_secret_ever_reaches_argv() -> None:
    """API keys and the HF token travel in the child's environment only (/proc/*/cmdline is public)."""
    specs = plan({"RERANK_ENABLED": "true", "EMBED_HF_TOKEN": TOKEN})
    for spec in specs:
        joined = " ".join(spec.argv)
        assert KEY not in joined and RERANK_KEY not in joined and TOKEN not in joined
        assert "--api-key" not in spec.argv and "--hf-token" not in spec.argv
        assert spec.env["HF_TOKEN"] == TOKEN
    assert specs[0].env["API_KEY"] == KEY
    assert specs[1].env["API_KEY"] == RERANK_KEY
    assert set(specs[0].secrets) == {KEY, TOKEN}


def test_children_never_share_a_port_prometheus_port_or_socket_path() -> None:
    """Each child gets its own --port, --prometheus-port and --uds-path (tei-contract §8)."""
    embed, rerank = plan({"RERANK_ENABLED": "true"})
    values = [flag(s.argv, f)[0] for s in (embed, rerank) for f in ("--port", "--prometheus-port")]
    assert len(set(values)) == 4
    assert flag(embed.argv, "--uds-path") != flag(rerank.argv, "--uds-path")


def test_argv_always_names_address_port_cache_and_served_model() -> None:
    """TEI defaults (HOSTNAME env, port 3000, /data cache) can never leak in."""
    (spec,) = plan({"EMBED_HOST": "127.0.0.1", "EMBED_PORT": "8100", "EMBED_DATA_DIR": "/d"})
    assert flag(spec.argv, "--hostname") == ["127.0.0.1"]
    assert flag(spec.argv, "--port") == ["8100"]
    assert flag(spec.argv, "--huggingface-hub-cache") == ["/d"]
    assert flag(spec.argv, "--served-model-name") == ["BAAI/bge-small-en-v1.5"]
    assert flag(spec.argv, "--model-id") == ["BAAI/bge-small-en-v1.5"]
    assert spec.health_url == "http://127.0.0.1:8100/health"


def test_environment_is_scrubbed_of_everything_tei_would_misread() -> None:
    """Inherited HOSTNAME, PORT, API_KEY, MODEL_ID, LOG_LEVEL, TASK... never reach TEI."""
    parent = {
        "PATH": "/usr/bin", "HOSTNAME": "a97365ebc54d", "PORT": "80", "API_KEY": "leak", "MODEL_ID": "x",
        "LOG_LEVEL": "verbose", "TASK": "sentence-similarity", "HUGGINGFACE_HUB_CACHE": "/data",
        "EMBED_API_KEY": KEY, "CUDA_VISIBLE_DEVICES": "0", "LD_LIBRARY_PATH": "/usr/local/lib",
    }  # fmt: skip
    (spec,) = build_plan(settings(), tei_bin="tei", keys={"embed": None}, model_sources={}, parent_env=parent)
    assert spec.env == {
        "PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0", "LD_LIBRARY_PATH": "/usr/local/lib", "NO_COLOR": "1",
    }  # fmt: skip


def test_tuning_flags_follow_the_fixed_ones() -> None:
    """Configured TEI limits become flags; the generous client batch default lets RAG clients work."""
    (spec,) = plan(
        {
            "EMBED_MAX_CLIENT_BATCH_SIZE": "1024",
            "EMBED_REVISION": "v2",
            "EMBED_CORS_ALLOW_ORIGIN": "https://a,https://b",
        }
    )
    assert flag(spec.argv, "--max-client-batch-size") == ["1024"]
    assert flag(spec.argv, "--revision") == ["v2"]
    assert flag(spec.argv, "--cors-allow-origin") == ["https://a", "https://b"]
    (default,) = plan({})
    assert int(flag(default.argv, "--max-client-batch-size")[0]) >= 256


def test_a_downloaded_snapshot_is_passed_as_a_local_directory() -> None:
    """With a snapshot dir as --model-id TEI touches no network; the repo id stays the served name."""
    (spec,) = plan({}, sources={"embed": "/d/models--BAAI--bge-small-en-v1.5/snapshots/abc"})
    assert flag(spec.argv, "--model-id") == ["/d/models--BAAI--bge-small-en-v1.5/snapshots/abc"]
    assert flag(spec.argv, "--served-model-name") == ["BAAI/bge-small-en-v1.5"]
    assert spec.env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    ("host", "probe"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("10.1.2.3", "10.1.2.3"), ("::1", "[::1]")]
)
def test_health_is_probed_on_a_reachable_address(host: str, probe: str) -> None:
    """A wildcard bind is probed over loopback; a specific address is probed as is."""
    assert probe_host(host) == probe


# ---- many models, behind the gateway ----


def gateway_plan(env: dict[str, str]) -> tuple[ChildSpec, ...]:
    s = settings(**env)
    ports = {svc.name: (20000 + 2 * i, 20001 + 2 * i) for i, svc in enumerate(s.services)}
    return build_plan(s, tei_bin="/usr/local/bin/text-embeddings-router", keys={"embed": KEY, "rerank": RERANK_KEY},
                      model_sources={}, parent_env={"PATH": "/usr/bin"}, internal_ports=ports,
                      python="/opt/venv/bin/python", created=1764230000)  # fmt: skip


MANY = {"EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3", "RERANK_ENABLED": "true", "EMBED_HOST": "0.0.0.0"}


def test_behind_the_gateway_each_tei_listens_on_loopback_on_its_own_ports() -> None:
    """The TEIs bind 127.0.0.1 on the chosen internal ports; the gateway comes last, on the public door."""
    specs = gateway_plan(MANY)
    assert [s.name for s in specs] == ["embed", "rerank", "embed-bge-m3", "gateway"]
    for spec, (port, metrics) in zip(specs, [(20000, 20001), (20002, 20003), (20004, 20005)], strict=False):
        assert flag(spec.argv, "--hostname") == ["127.0.0.1"]
        assert flag(spec.argv, "--port") == [str(port)] and flag(spec.argv, "--prometheus-port") == [str(metrics)]
        assert spec.health_url == f"http://127.0.0.1:{port}/health"
    gateway = specs[-1]
    assert gateway.argv == ("/opt/venv/bin/python", "-m", "embed_launcher.gateway")
    assert gateway.health_url == "http://127.0.0.1:8000/health" and gateway.kind == "gateway"


def test_the_gateway_config_routes_every_model_and_carries_no_secret() -> None:
    """EMBED_GATEWAY_CONFIG: listen on both doors, each model with its upstream; keys only in their own variables."""
    gateway = gateway_plan({**MANY, "EMBED_SERVED_MODEL_NAME": "small"})[-1]
    config = json.loads(gateway.env["EMBED_GATEWAY_CONFIG"])
    assert config["listen"] == [{"host": "0.0.0.0", "port": 8000, "routes": "all"},
                                {"host": "0.0.0.0", "port": 8001, "routes": "rerank"}]  # fmt: skip
    assert [(m["name"], m["aliases"], m["kind"], m["upstream"], m["default"]) for m in config["models"]] == [
        ("small", ["BAAI/bge-small-en-v1.5"], "embed", "http://127.0.0.1:20000", True),
        ("BAAI/bge-reranker-v2-m3", [], "rerank", "http://127.0.0.1:20002", True),
        ("BAAI/bge-m3", [], "embed", "http://127.0.0.1:20004", False),
    ]
    assert config["models"][0]["max_client_batch_size"] == 512
    assert (config["wait_s"], config["workers"], config["access_log"]) == (30.0, 1, False)
    assert config["created"] == 1764230000
    assert KEY not in gateway.env["EMBED_GATEWAY_CONFIG"] and KEY not in " ".join(gateway.argv)
    assert gateway.env["EMBED_GATEWAY_EMBED_KEY"] == KEY and gateway.env["EMBED_GATEWAY_RERANK_KEY"] == RERANK_KEY
    assert set(gateway.secrets) == {KEY, RERANK_KEY}


def test_without_the_gateway_internal_ports_are_ignored() -> None:
    """One model per port: the TEIs keep the public ports, as before; the gateway serves only /metrics, on the
    Prometheus ports."""
    specs = gateway_plan({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "false"})
    assert [s.name for s in specs] == ["embed", "rerank", "gateway"]
    assert flag(specs[0].argv, "--port") == ["8000"]
    assert [li["routes"] for li in json.loads(specs[-1].env["EMBED_GATEWAY_CONFIG"])["listen"]] == ["metrics"] * 2
