"""What a reload changes (pure): the running settings against the re-read ones, model by model.

Each model (by its service name: "embed", "rerank", "embed-bge-m3") is unchanged, added, removed or
replaced. A replaced model gets new TEIs beside the old ones (blue-green); an unchanged one is not
touched. Some changes cannot be made without a new launcher or gateway process (its ports, its bind
address, the data directory...): they are refused as "restart required", naming the variable. The
vector-space guard refuses a new model or revision behind a name clients already use, unless the
models file allows it for that entry (`allow_vector_change = true`): stored vectors would silently
stop matching new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum

from embed_launcher.config.services import ServiceSettings
from embed_launcher.config.settings import Settings
from embed_launcher.supervision.placement import Slot


class Action(Enum):
    UNCHANGED = "unchanged"
    ADDED = "added"
    REMOVED = "removed"
    REPLACED = "replaced"


@dataclass(frozen=True)
class ModelChange:
    """One model's fate in a reload."""

    name: str  # the service name (status key, child name prefix)
    action: Action
    old: ServiceSettings | None = None
    new: ServiceSettings | None = None

    @property
    def model(self) -> str:
        return (self.new or self.old).model  # type: ignore[union-attr]  # one of them is always set

    def describe(self) -> str:
        """"added BAAI/bge-m3", "replaced embed (BAAI/bge-small-en-v1.5)"."""
        return f"{self.action.value} {self.name} ({self.model})"


@dataclass(frozen=True)
class ReloadPlan:
    """The changes, and the reasons the reload is refused (empty: it may go ahead)."""

    changes: tuple[ModelChange, ...]
    refused: tuple[str, ...] = ()
    gateway_changed: bool = False  # the gateway's settings (not its listeners) differ: it re-reads them

    @property
    def moved(self) -> tuple[ModelChange, ...]:
        """The models whose TEIs start or stop."""
        return tuple(c for c in self.changes if c.action is not Action.UNCHANGED)

    @property
    def nothing(self) -> bool:
        return not self.moved and not self.gateway_changed

    def summary(self) -> str:
        """One line: what moves, or that nothing does."""
        if not self.moved:
            return "no model changed" + ("; the gateway's settings are applied" if self.gateway_changed else "")
        return "; ".join(c.describe() for c in self.moved)


# Settings that only a new process can apply: (variable, how to read it from the settings).
RESTART_REQUIRED: tuple[tuple[str, Callable[[Settings], object]], ...] = (
    ("EMBED_HOST", lambda s: s.host),
    ("EMBED_PORT", lambda s: (s.embed.enabled or s.gateway, s.embed.port)),
    ("RERANK_PORT", lambda s: (s.rerank.enabled, s.rerank.port)),
    ("EMBED_PROMETHEUS_PORT", lambda s: s.embed.prometheus_port if not s.gateway else None),
    ("RERANK_PROMETHEUS_PORT", lambda s: s.rerank.prometheus_port if not s.gateway else None),
    ("EMBED_ENABLED", lambda s: s.embed.enabled),
    ("RERANK_ENABLED", lambda s: s.rerank.enabled),
    ("EMBED_DATA_DIR", lambda s: s.data_dir),
    ("EMBED_GATEWAY", lambda s: s.gateway),
    ("EMBED_GATEWAY_WORKERS", lambda s: s.gateway_workers),
    ("EMBED_GATEWAY_READ_TIMEOUT", lambda s: s.gateway_read_timeout_s),
    ("EMBED_GATEWAY_ACCESS_LOG", lambda s: s.gateway_access_log),
    ("EMBED_API_KEY", lambda s: s.embed.api_key),
    ("RERANK_API_KEY", lambda s: s.rerank.api_key),
    ("EMBED_API_KEYS_FILE", lambda s: s.keys_file if s.keys_file_given else None),
    ("EMBED_TEI_BIN", lambda s: s.tei_bin),
    ("EMBED_BACKEND", lambda s: s.backend),
    ("EMBED_LOG_FORMAT", lambda s: s.log_format),  # every TEI's --json-output, and the launcher's own lines
)

# The gateway settings a running gateway re-reads (they travel in its configuration file).
GATEWAY_SETTINGS: tuple[Callable[[Settings], object], ...] = (
    lambda s: s.gateway_wait_s, lambda s: s.gateway_max_inputs, lambda s: s.gateway_upstream_timeout_s,
    lambda s: s.token_input, lambda s: s.gateway_balance, lambda s: s.stop_timeout_s, lambda s: s.metrics_auth,
)

# What only the gateway reads of a model: a change there re-routes, it starts no TEI.
_GATEWAY_ONLY = {"prompts": (), "matryoshka_dimensions": (), "allow_vector_change": False, "default": True}


def restart_required(old: Settings, new: Settings) -> list[str]:
    """One message per variable whose change needs a restart."""
    return [f"{variable} changed: restart required (a reload cannot change it)"
            for variable, read in RESTART_REQUIRED if read(old) != read(new)]


def tei_identity(service: ServiceSettings) -> ServiceSettings:
    """The service as its TEI sees it: what only the gateway reads is blanked out."""
    return replace(service, **_GATEWAY_ONLY)  # type: ignore[arg-type]


def names_of(service: ServiceSettings) -> set[str]:
    """The names clients reach a model by: its served name and its Hub id."""
    return {service.served_name, service.model}


def vector_guard(old: tuple[ServiceSettings, ...], new: tuple[ServiceSettings, ...]) -> list[str]:
    """A new model or revision behind a name in use, without `allow_vector_change = true`."""
    problems = []
    for fresh in new:
        for running in old:
            shared = names_of(fresh) & names_of(running)
            if not shared or (fresh.model, fresh.revision) == (running.model, running.revision):
                continue
            if fresh.allow_vector_change:
                continue
            name = fresh.served_name if fresh.served_name in shared else sorted(shared)[0]
            was = running.model + (f"@{running.revision}" if running.revision else "")
            now = fresh.model + (f"@{fresh.revision}" if fresh.revision else "")
            problems.append(
                f"the model behind '{name}' would change from {was} to {now}: vectors stored from the old model"
                " do not match the new one's. Refused; set allow_vector_change = true in its [[models]] entry"
                " of the models file if you mean it (and re-embed what you stored)")
    return problems


def diff(
    old: Settings,
    new: Settings,
    old_placement: Mapping[str, tuple[Slot, ...]] | None = None,
    new_placement: Mapping[str, tuple[Slot, ...]] | None = None,
) -> ReloadPlan:
    """The reload from ``old`` to ``new``; placements give each model's replicas (None: one each)."""
    before = {s.name: s for s in old.services}
    after = {s.name: s for s in new.services}

    def slots(placement: Mapping[str, tuple[Slot, ...]] | None, name: str) -> tuple[Slot, ...]:
        return (placement or {}).get(name, (Slot(0),))

    changes = []
    for name, service in before.items():
        if name not in after:
            changes.append(ModelChange(name, Action.REMOVED, old=service))
    for name, service in after.items():
        running = before.get(name)
        if running is None:
            changes.append(ModelChange(name, Action.ADDED, new=service))
        elif tei_identity(running) != tei_identity(service) or slots(old_placement, name) != slots(new_placement, name):
            changes.append(ModelChange(name, Action.REPLACED, old=running, new=service))
        else:
            changes.append(ModelChange(name, Action.UNCHANGED, old=running, new=service))
    refused = restart_required(old, new) + vector_guard(old.services, new.services)
    if not new.gateway and any(c.action is not Action.UNCHANGED for c in changes) and not refused:
        refused.append("EMBED_GATEWAY is off: TEI itself holds the public ports, so its models change only with a"
                       " restart (restart required)")
    gateway_changed = any(read(old) != read(new) for read in GATEWAY_SETTINGS) or any(
        c.old != c.new for c in changes if c.action is Action.UNCHANGED)
    return ReloadPlan(tuple(changes), tuple(refused), gateway_changed)
