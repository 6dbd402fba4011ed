"""Placement as a pure table: GPUs x models x replicas x pins -> each replica's GPU (or cores), or one clear error."""

from __future__ import annotations

import pytest

from embed_launcher.config.services import ServiceSettings
from embed_launcher.reporting.errors import ConfigError
from embed_launcher.supervision.placement import Slot, place, several

GPUS4 = ("0", "1", "2", "3")
CPUS4 = (0, 1, 2, 3)


def svc(name: str, replicas: int = 0, gpus: tuple[str, ...] | None = None, kind: str = "embed") -> ServiceSettings:
    return ServiceSettings(name=name, enabled=True, model=f"org/{name}", port=8000, api_key=None, revision=None,
                           served_model_name=None, prometheus_port=18000, kind=kind, replicas=replicas, gpus=gpus)


def gpus_of(placement: dict[str, tuple[Slot, ...]]) -> dict[str, list[str | None]]:
    return {name: [slot.gpu for slot in slots] for name, slots in placement.items()}


# (services, usable GPUs, expected GPU per replica)
GPU_TABLE = [
    pytest.param([svc("embed")], GPUS4, {"embed": ["0", "1", "2", "3"]}, id="auto-one-per-gpu"),
    pytest.param([svc("embed", 1), svc("rerank", 1, kind="rerank")], GPUS4,
                 {"embed": ["0"], "rerank": ["1"]}, id="two-single-replica-models-on-different-gpus"),
    pytest.param([svc("embed", 2), svc("rerank", 1, kind="rerank"), svc("sparse", 2)], GPUS4,
                 {"embed": ["0", "1"], "rerank": ["2"], "sparse": ["3", "0"]}, id="offsets-wrap-around"),
    pytest.param([svc("embed", 6)], ("0", "1"), {"embed": ["0", "1", "0", "1", "0", "1"]},
                 id="more-replicas-than-gpus-spread-evenly"),
    pytest.param([svc("embed"), svc("rerank", kind="rerank")], GPUS4,
                 {"embed": ["0", "1", "2", "3"], "rerank": ["0", "1", "2", "3"]}, id="auto-both-everywhere"),
    pytest.param([svc("embed", gpus=("0", "2"))], GPUS4, {"embed": ["0", "2"]}, id="pinned-auto-one-per-pin"),
    pytest.param([svc("embed", 4, gpus=("3", "1"))], GPUS4, {"embed": ["3", "1", "3", "1"]},
                 id="pinned-more-replicas-than-pins"),
    pytest.param([svc("embed", 1, gpus=("2",)), svc("rerank", 1, kind="rerank")], GPUS4,
                 {"embed": ["2"], "rerank": ["0"]}, id="a-pin-does-not-move-the-others"),
    pytest.param([svc("embed", 1)], ("GPU-aa", "GPU-bb"), {"embed": ["GPU-aa"]}, id="uuids"),
    pytest.param([svc("embed", 2)], ("2", "3"), {"embed": ["2", "3"]}, id="the-visible-ids-not-0-based"),
]


@pytest.mark.parametrize(("services", "gpus", "expected"), GPU_TABLE)
def test_replicas_spread_over_the_gpus(services: list[ServiceSettings], gpus: tuple[str, ...],
                                       expected: dict[str, list[str]]) -> None:
    placement = place(services, gpus, CPUS4)
    assert gpus_of(placement) == expected
    for slots in placement.values():
        assert [s.replica for s in slots] == list(range(len(slots)))
        assert all(s.cpus == () and s.tokenization_workers is None for s in slots)  # GPUs: cores not split


def test_auto_without_the_gateway_is_one_replica() -> None:
    """EMBED_GATEWAY=false: nothing could share requests between replicas, so auto means one."""
    assert gpus_of(place([svc("embed")], GPUS4, CPUS4, gateway_allowed=False)) == {"embed": ["0"]}


# (services, usable GPUs, words every message must hold)
ERRORS = [
    pytest.param([svc("embed", gpus=("0", "7"))], GPUS4, ["org/embed", "GPU 7", "usable GPUs: 0, 1, 2, 3",
                                                          "from nvidia-smi -L"], id="a-gpu-that-does-not-exist"),
    pytest.param([svc("embed", 1, gpus=("0", "1"))], GPUS4, ["replicas = 1", "2 pinned GPUs", "replicas = 2"],
                 id="replicas-fewer-than-pins"),
    pytest.param([svc("embed", gpus=("0",))], (), ["org/embed", "no GPU is usable", "Remove `gpus`"],
                 id="pins-on-a-cpu-host"),
    pytest.param([svc("embed", 3), svc("rerank", 2, kind="rerank")], (),
                 ["EMBED_REPLICAS", "5 replicas", "4 CPU cores"], id="more-cpu-replicas-than-cores"),
]


@pytest.mark.parametrize(("services", "gpus", "words"), ERRORS)
def test_impossible_placements_are_one_clear_error(services: list[ServiceSettings], gpus: tuple[str, ...],
                                                   words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        place(services, gpus, CPUS4)
    assert len(caught.value.problems) == 1
    for word in words:
        assert word in caught.value.problems[0]


def test_every_impossible_pin_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        place([svc("embed", gpus=("9",)), svc("rerank", 1, gpus=("0", "1"), kind="rerank")], GPUS4, CPUS4)
    assert len(caught.value.problems) == 2


def test_on_cpu_auto_is_one_unpinned_replica() -> None:
    """Today's behaviour: one TEI per model, sized by TEI for the whole machine."""
    placement = place([svc("embed"), svc("rerank", kind="rerank")], (), CPUS4)
    assert placement == {"embed": (Slot(0),), "rerank": (Slot(0),)}
    assert not several(placement)


@pytest.mark.parametrize(
    ("services", "cpus", "expected"),
    [
        pytest.param([svc("embed", 2)], CPUS4, {"embed": [(0, 1), (2, 3)]}, id="two-replicas-halves"),
        pytest.param([svc("embed", 2), svc("rerank", kind="rerank")], (0, 1, 2, 3, 4, 5),
                     {"embed": [(0, 1), (2, 3)], "rerank": [(4, 5)]}, id="every-model-gets-its-share"),
        pytest.param([svc("embed", 3)], (4, 5, 6, 7, 8, 9, 10), {"embed": [(4, 5), (6, 7), (8, 9)]},
                     id="the-affinity-set-not-0-based-remainder-unused"),
        pytest.param([svc("embed", 2)], (0, 1), {"embed": [(0,), (1,)]}, id="one-core-each"),
    ],
)
def test_cpu_replicas_split_the_cores(services: list[ServiceSettings], cpus: tuple[int, ...],
                                      expected: dict[str, list[tuple[int, ...]]]) -> None:
    placement = place(services, (), cpus)
    assert {name: [s.cpus for s in slots] for name, slots in placement.items()} == expected
    for slots in placement.values():
        assert all(s.gpu is None and s.tokenization_workers == len(s.cpus) for s in slots)
    every = [c for slots in placement.values() for s in slots for c in s.cpus]
    assert len(every) == len(set(every))  # no core shared


def test_several_replicas_need_the_gateway() -> None:
    assert several(place([svc("embed", 2)], GPUS4, CPUS4))
    assert not several(place([svc("embed", 1), svc("rerank", 1, kind="rerank")], GPUS4, CPUS4))
