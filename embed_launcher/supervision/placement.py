"""Placement (pure): how many TEI replicas each model runs, and on which GPU or CPU cores each one runs.

TEI serves one model on one GPU per process; its maintainers' answer to "four GPUs, one busy" is one
TEI per GPU behind a load balancer. Here each replica is one supervised TEI with its own
CUDA_VISIBLE_DEVICES, and the gateway balances across them.

- On a GPU host, `auto` replicas means one per usable GPU. Replicas spread over the GPUs in turn, and
  each model starts where the previous one stopped, so two single-replica models land on different
  GPUs. A model's `gpus` (models file) pins its replicas to those GPUs, in turn.
- On a CPU host, `auto` means 1 replica. Explicit replicas split the cores: every replica of every
  model gets its own share, pinned, and as many tokenization workers as it has cores, because several
  TEIs each sized for the whole machine only fight over it (oversubscription is a measured loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embed_launcher.config.services import ServiceSettings
from embed_launcher.reporting.errors import ConfigError

AUTO = 0  # ServiceSettings.replicas: one per usable GPU, 1 on CPU


@dataclass(frozen=True)
class Slot:
    """Where one replica runs."""

    replica: int  # 0-based, within its model
    gpu: str | None = None  # the id its CUDA_VISIBLE_DEVICES names; None on CPU
    cpus: tuple[int, ...] = ()  # cores it is pinned to; () = not pinned
    tokenization_workers: int | None = None  # matches its cores when pinned


Placement = dict[str, tuple[Slot, ...]]  # service name -> its replicas, in order


def _variable(service: ServiceSettings) -> str:
    """Where a model's replica count comes from, for messages."""
    return "RERANK_REPLICAS" if service.kind == "rerank" else "EMBED_REPLICAS"


def place(
    services: Sequence[ServiceSettings],
    gpus: Sequence[str],
    cpus: Sequence[int],
    *,
    gpu_source: str = "nvidia-smi -L",
    gateway_allowed: bool = True,
) -> Placement:
    """Every service's replicas. ``gpus``: the usable GPU ids (empty on a CPU host), from ``gpu_source``;
    ``cpus``: the cores this process may use. Raises ConfigError with every impossible request."""
    problems: list[str] = []
    placement = _on_gpus(services, tuple(gpus), gpu_source, gateway_allowed, problems) if gpus \
        else _on_cpus(services, tuple(cpus), problems)
    if problems:
        raise ConfigError(problems)
    return placement


def _on_gpus(services: Sequence[ServiceSettings], gpus: tuple[str, ...], source: str, gateway_allowed: bool,
             problems: list[str]) -> Placement:
    placement: Placement = {}
    cursor = 0  # where the next unpinned model starts
    usable = ", ".join(gpus)
    for s in services:
        if s.gpus is not None:
            missing = [g for g in s.gpus if g not in gpus]
            if missing:
                problems.append(
                    f"EMBED_MODELS_FILE: {s.served_name} is pinned to GPU {', '.join(missing)}, which is not"
                    f" usable here (usable GPUs: {usable}, from {source}). Pin GPUs from that list."
                )
                continue
            count = s.replicas or len(s.gpus)
            if count < len(s.gpus):
                problems.append(
                    f"EMBED_MODELS_FILE: {s.served_name} has replicas = {count}, fewer than its {len(s.gpus)}"
                    f" pinned GPUs ({', '.join(s.gpus)}). Set replicas = {len(s.gpus)} (or auto), or pin fewer GPUs."
                )
                continue
            placement[s.name] = tuple(Slot(i, s.gpus[i % len(s.gpus)]) for i in range(count))
            continue
        count = s.replicas or (len(gpus) if gateway_allowed else 1)
        placement[s.name] = tuple(Slot(i, gpus[(cursor + i) % len(gpus)]) for i in range(count))
        cursor += count
    return placement


def _on_cpus(services: Sequence[ServiceSettings], cpus: tuple[int, ...], problems: list[str]) -> Placement:
    pinned = [s for s in services if s.gpus is not None]
    for s in pinned:
        problems.append(
            f"EMBED_MODELS_FILE: {s.served_name} is pinned to GPU {', '.join(s.gpus or ())}, but no GPU is usable"
            " (EMBED_GPUS unset, no CUDA_VISIBLE_DEVICES, nvidia-smi -L lists none). Remove `gpus`, or run on a"
            " GPU host."
        )
    counts = {s.name: s.replicas or 1 for s in services}
    if all(s.replicas in (AUTO, 1) for s in services):
        return {s.name: (Slot(0),) for s in services}  # one TEI per model, as without replicas: no pinning
    total = sum(counts.values())
    if total > len(cpus):
        many = next(s for s in services if counts[s.name] > 1)
        problems.append(
            f"{_variable(many)}: {total} replicas in all would share {len(cpus)} CPU cores; each replica needs"
            f" a core of its own (several TEIs on one core only slow each other). Lower the replica counts."
        )
        return {}
    share = len(cpus) // total
    placement: Placement = {}
    start = 0
    for s in services:
        slots = []
        for i in range(counts[s.name]):
            slots.append(Slot(i, None, cpus[start:start + share], share))
            start += share
        placement[s.name] = tuple(slots)
    return placement


def several(placement: Placement) -> bool:
    """Some model runs more than one replica (then the gateway must share its requests)."""
    return any(len(slots) > 1 for slots in placement.values())
