"""Small parts of the reload: the gateway configuration's generation, the gateway's lines as events, ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embed_launcher.config.settings import load_settings
from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError
from embed_launcher.gateway.reconfigure import refused_line, switched_line
from embed_launcher.startup.launcher import routed_event
from embed_launcher.startup.reloading import internal_ports
from embed_launcher.supervision.events import GatewayRouted

CONFIG = {"listen": [{"host": "127.0.0.1", "port": 8000}],
          "models": [{"name": "a", "kind": "embed", "upstream": "http://127.0.0.1:18000", "default": True}]}


def test_a_gateway_configuration_carries_its_generation_and_retire_time() -> None:
    config = GatewayConfig.from_json(json.dumps({**CONFIG, "generation": 3, "retire_s": 40.0}))
    assert (config.generation, config.retire_s) == (3, 40.0)
    assert GatewayConfig.from_json(config.to_json()) == config
    assert GatewayConfig.from_json(json.dumps(CONFIG)).generation == 0
    with pytest.raises(GatewayConfigError, match="retire_s: must be >= 0"):
        GatewayConfig.from_json(json.dumps({**CONFIG, "retire_s": -1}))


@pytest.mark.parametrize(("line", "event"), [
    (switched_line(4), GatewayRouted(4)),
    (refused_line(5, "restart required (listen changed)"), GatewayRouted(5, "restart required (listen changed)")),
    ("Gateway ready on 127.0.0.1:8000", None),
    ("Gateway routes: configuration x in force", None),
])
def test_the_gateways_lines_become_events(line: str, event: GatewayRouted | None) -> None:
    assert routed_event(line) == event


def test_unchanged_models_keep_their_ports_and_moved_ones_get_new_ones() -> None:
    models = '[[models]]\nmodel = "org/a"\nalias = "a"\n[[models]]\nmodel = "org/b"\nalias = "b"\n'
    settings = load_settings({"EMBED_MODELS_FILE": "m.toml"}, None, env_file=Path("/none.env"), cwd=Path("/srv"),
                             read_file=lambda path: models)
    picked = iter(range(30000, 30100))
    current = {"embed": (20000, 20001), "embed-b": (20002, 20003)}
    internal = internal_ports(settings, {}, {"embed-b"}, current, lambda n: [next(picked) for _ in range(n)])
    assert internal == {"embed": (20000, 20001), "embed-b": (30000, 30001)}
