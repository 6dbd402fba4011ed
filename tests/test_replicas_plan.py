"""Replicas in the plan: one TEI per replica, each with its own GPU, ports and uds path; the gateway gets the pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embed_launcher.config.settings import Settings, load_settings
from embed_launcher.reporting.errors import ConfigError
from embed_launcher.startup.gpus import parse_smi_list, usable_gpus, visible_devices
from embed_launcher.supervision.placement import place
from embed_launcher.supervision.plan import ChildSpec, build_plan, replica_name

SMI_4 = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)\n"
                for i in range(4))


def settings(**env: str) -> Settings:
    return load_settings(env, None, env_file=Path("/nonexistent.env"), cwd=Path("/srv"))


def plan(env: dict[str, str], gpus: tuple[str, ...], cpus: tuple[int, ...] = (0, 1, 2, 3),
         parent: dict[str, str] | None = None) -> tuple[ChildSpec, ...]:
    s = settings(**env)
    placement = place(s.services, gpus, cpus)
    names = [replica_name(svc.name, slot.replica, len(placement[svc.name]))
             for svc in s.services for slot in placement[svc.name]]
    internal = {name: (30000 + 2 * i, 30001 + 2 * i) for i, name in enumerate(names)}
    return build_plan(s, tei_bin="/usr/local/bin/text-embeddings-router", keys={"embed": "k", "rerank": "r"},
                      model_sources={}, parent_env=parent or {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
                      internal_ports=internal if s.gateway or len(names) > len(s.services) else None,
                      placement=placement)


def flag(argv: tuple[str, ...], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_each_replica_is_one_tei_on_its_own_gpu_and_ports() -> None:
    """Four GPUs, two models with auto replicas: eight TEIs, each told exactly one GPU, nothing shared."""
    specs = plan({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "true"}, ("0", "1", "2", "3"))
    teis = [s for s in specs if s.kind != "gateway"]
    assert [s.name for s in teis] == [f"embed#{i}" for i in range(4)] + [f"rerank#{i}" for i in range(4)]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in teis] == ["0", "1", "2", "3"] * 2
    assert [(s.service, s.replica, s.replicas, s.gpu) for s in teis[:2]] == [("embed", 0, 4, "0"), ("embed", 1, 4, "1")]
    for what in ("--port", "--prometheus-port", "--uds-path"):
        values = [flag(s.argv, what)[0] for s in teis]
        assert len(set(values)) == len(values), what
    assert all(flag(s.argv, "--hostname") == ["127.0.0.1"] for s in teis)
    assert teis[1].label == "Embeddings replica 1 (GPU 1)"


def test_the_gateway_gets_every_replica_of_a_model_in_one_route() -> None:
    specs = plan({"EMBED_REPLICAS": "3", "EMBED_GATEWAY_BALANCE": "round-robin"}, ("0", "1", "2", "3"))
    gateway = specs[-1]
    config = json.loads(gateway.env["EMBED_GATEWAY_CONFIG"])
    (model,) = config["models"]
    ports = [s.port for s in specs[:-1]]
    assert model["replicas"] == [f"http://127.0.0.1:{p}" for p in ports] and model["upstream"] == model["replicas"][0]
    assert config["balance"] == "round-robin"


def test_one_replica_keeps_todays_names_and_tells_tei_its_gpu() -> None:
    """A single-GPU host: the child is still `embed` (status keys, logs), on that GPU; TEI direct on its port
    with EMBED_GATEWAY=false, on an internal port behind the gateway by default."""
    spec, _metrics = plan({"EMBED_GATEWAY": "false"}, ("0",))
    assert spec.name == "embed" and spec.env["CUDA_VISIBLE_DEVICES"] == "0" and spec.label == "Embeddings (GPU 0)"
    assert flag(spec.argv, "--port") == ["8000"]
    [tei] = [s for s in plan({}, ("0",)) if s.kind != "gateway"]
    assert tei.name == "embed" and tei.env["CUDA_VISIBLE_DEVICES"] == "0" and flag(tei.argv, "--port") != ["8000"]


def test_cpu_replicas_are_pinned_with_matching_tokenization_workers() -> None:
    specs = plan({"EMBED_REPLICAS": "2"}, (), cpus=(0, 1, 2, 3), parent={"PATH": "/usr/bin"})
    teis = [s for s in specs if s.kind != "gateway"]
    assert [s.cpus for s in teis] == [(0, 1), (2, 3)]
    assert [flag(s.argv, "--tokenization-workers") for s in teis] == [["2"], ["2"]]
    assert all("CUDA_VISIBLE_DEVICES" not in s.env for s in teis)


def test_a_users_tokenization_workers_win() -> None:
    specs = plan({"EMBED_REPLICAS": "2", "EMBED_TOKENIZATION_WORKERS": "1"}, (), cpus=(0, 1, 2, 3))
    assert [flag(s.argv, "--tokenization-workers") for s in specs if s.kind != "gateway"] == [["1"], ["1"]]


# -- configuration ------------------------------------------------------------------------------

def test_replicas_turn_the_gateway_on_and_false_is_an_error() -> None:
    assert settings(EMBED_REPLICAS="2").gateway is True
    assert settings().gateway is True  # auto: on by default (issue 18)
    assert settings(EMBED_GATEWAY="false").gateway is False  # one replica: TEI direct is allowed
    with pytest.raises(ConfigError) as caught:
        settings(EMBED_REPLICAS="2", EMBED_GATEWAY="false")
    assert "EMBED_GATEWAY=auto" in str(caught.value) and "EMBED_REPLICAS=1" in str(caught.value)


@pytest.mark.parametrize(("name", "raw"), [("EMBED_REPLICAS", "0"), ("EMBED_REPLICAS", "two"),
                                           ("RERANK_REPLICAS", "-1"), ("EMBED_GPUS", "0,0"),
                                           ("EMBED_GPUS", "cuda:0"), ("EMBED_GATEWAY_BALANCE", "random")])
def test_bad_replica_settings_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{name: raw})
    assert str(caught.value).count(name) >= 1


def test_the_models_file_sets_replicas_and_gpus(tmp_path: Path) -> None:
    text = ('[[models]]\nmodel = "BAAI/bge-m3"\nreplicas = 3\ngpus = [0, 2]\n'
            '[[models]]\nmodel = "BAAI/bge-reranker-v2-m3"\nkind = "rerank"\nreplicas = "auto"\n')
    s = load_settings({"EMBED_MODELS_FILE": "models.toml"}, None, env_file=Path("/x.env"), cwd=tmp_path,
                      read_file=lambda path: text)
    by_model = {svc.model: svc for svc in s.services}
    assert (by_model["BAAI/bge-m3"].replicas, by_model["BAAI/bge-m3"].gpus) == (3, ("0", "2"))
    assert (by_model["BAAI/bge-reranker-v2-m3"].replicas, by_model["BAAI/bge-reranker-v2-m3"].gpus) == (0, None)


@pytest.mark.parametrize("line", ['replicas = 0', 'replicas = true', 'gpus = "0"', 'gpus = [0, 0]', 'gpus = []'])
def test_bad_models_file_placement_names_file_and_key(tmp_path: Path, line: str) -> None:
    text = f'[[models]]\nmodel = "BAAI/bge-m3"\n{line}\n'
    with pytest.raises(ConfigError) as caught:
        load_settings({"EMBED_MODELS_FILE": "m.toml"}, None, env_file=Path("/x.env"), cwd=tmp_path,
                      read_file=lambda path: text)
    assert "m.toml" in str(caught.value) and line.split()[0] in str(caught.value)


# -- which GPUs ---------------------------------------------------------------------------------

def test_nvidia_smi_list_is_parsed_and_mig_lines_skipped() -> None:
    mig = "  MIG 1g.10gb     Device  0: (UUID: MIG-11111111-2222-3333-4444-555555555555)\n"
    assert parse_smi_list(SMI_4 + mig) == ("0", "1", "2", "3")
    assert parse_smi_list("No devices were found\n") == ()


@pytest.mark.parametrize(("value", "ids"), [("0,1", ("0", "1")), ("2, 3", ("2", "3")), ("", ()), ("-1", ()),
                                           ("NoDevFiles", ()), ("0,,1", ("0",)), ("GPU-ab,1", ("GPU-ab", "1"))])
def test_cuda_visible_devices_as_cuda_reads_it(value: str, ids: tuple[str, ...]) -> None:
    assert visible_devices(value) == ids


def test_which_gpus_embed_gpus_then_cuda_visible_devices_then_nvidia_smi() -> None:
    asked: list[str] = []

    def smi(path: str) -> str:
        asked.append(path)
        return SMI_4

    assert usable_gpus(("1",), {"CUDA_VISIBLE_DEVICES": "0,1"}, smi) == (("1",), "EMBED_GPUS")
    assert usable_gpus(None, {"CUDA_VISIBLE_DEVICES": "2,3"}, smi) == (("2", "3"), "CUDA_VISIBLE_DEVICES")
    assert not asked
    assert usable_gpus(None, {"PATH": "/opt/bin"}, smi) == (("0", "1", "2", "3"), "nvidia-smi -L")
    assert asked == ["/opt/bin"]
