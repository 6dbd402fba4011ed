"""The launcher's side of a reload (SIGHUP): re-read the configuration, diff it, download, plan the new TEIs.

It runs in a thread, off the supervisor's loop (the running TEIs stay supervised while models download),
and posts one ReloadPrepared event. Nothing changes here until the supervisor commits: a refusal, a failed
download or a failed start leaves the running configuration as it was.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from embed_launcher.config.load import load
from embed_launcher.config.settings import Settings
from embed_launcher.datadir.atomic import atomic_write
from embed_launcher.gateway.reconfigure import CONFIG_FILE_VAR
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import LauncherError
from embed_launcher.startup.download_phase import local_sources, service_backends
from embed_launcher.supervision.child import Timing
from embed_launcher.supervision.events import Mailbox, ReloadPrepared
from embed_launcher.supervision.placement import Placement
from embed_launcher.supervision.plan import GATEWAY, ChildSpec, build_plan, replica_name
from embed_launcher.supervision.reload import RETIRE_MARGIN_S, Prepared
from embed_launcher.supervision.reload_plan import Action, diff

GATEWAY_CONFIG_FILE = ".gateway.json"  # in the data directory: the gateway's routes, rewritten by each reload


@dataclass(frozen=True)
class Running:
    """The configuration in force: its settings, where its replicas run, their ports on 127.0.0.1."""

    settings: Settings
    placement: Placement
    internal: Mapping[str, tuple[int, int]]


def gateway_config_path(settings: Settings) -> Path:
    return settings.data_dir / GATEWAY_CONFIG_FILE


def with_config_file(spec: ChildSpec, path: Path, config_json: str | None = None) -> ChildSpec:
    """The gateway's spec, told where a reload's routes are written (and, for a reload, its routes)."""
    env = {**spec.env, CONFIG_FILE_VAR: str(path)}
    if config_json is not None:
        env["EMBED_GATEWAY_CONFIG"] = config_json
    return replace(spec, env=env)


def internal_ports(
    settings: Settings,
    placement: Placement,
    moved: set[str],
    current: Mapping[str, tuple[int, int]],
    pick_ports: Callable[[int], list[int]],
) -> dict[str, tuple[int, int]]:
    """Each replica's (port, Prometheus port) on 127.0.0.1: unchanged models keep their TEIs' ports; added
    and replaced ones get fresh ones (their old TEIs still hold theirs)."""
    names = []
    for s in settings.services:
        count = len(placement.get(s.name, ())) or 1
        names += [(s.name, replica_name(s.name, i, count)) for i in range(count)]
    fresh = [name for service, name in names if service in moved or name not in current]
    ports = pick_ports(2 * len(fresh)) if fresh else []
    internal = {name: current[name] for _, name in names if name not in fresh}
    internal.update({name: (ports[2 * i], ports[2 * i + 1]) for i, name in enumerate(fresh)})
    return internal


class LauncherReloader:
    """Prepares reloads for the supervisor (supervision.reload.Reloader)."""

    def __init__(
        self,
        running: Running,
        *,
        environ: Mapping[str, str],
        console: Console,
        mailbox: Mailbox,
        fetch: Callable[..., dict[str, str]],
        pick_ports: Callable[[int], list[int]],
        place: Callable[[Settings], tuple[Settings, Placement]],
        timing: Callable[[Settings], Timing],
        tei_bin: str,
        backend: Callable[[Settings], str],
        keys: Mapping[str, str | None],
        created: int,
        on_commit: Callable[[Settings], None] = lambda settings: None,
    ) -> None:
        self.running = running
        self.environ, self.console, self.mailbox = environ, console, mailbox
        self.fetch, self.pick_ports, self.place, self.timing = fetch, pick_ports, place, timing
        self.tei_bin, self.backend, self.keys, self.created = tei_bin, backend, keys, created
        self.on_commit = on_commit  # the state files embed_manage --showinfo reads name the default models

    # -- Reloader ---------------------------------------------------------------------------

    def prepare(self, generation: int) -> None:
        threading.Thread(target=self._prepare, args=(generation,), name="reload", daemon=True).start()

    def write_gateway_config(self, text: str) -> None:
        self.write_file(gateway_config_path(self.running.settings), text)

    @staticmethod
    def write_file(path: Path, text: str) -> None:
        """Atomically: the gateway reads a whole file or the previous one (no secrets in it: 0600 all the same)."""
        atomic_write(path, text.encode(), 0o600, durable=False)

    def committed(self, prepared: Prepared) -> None:
        assert isinstance(prepared.state, Running)
        self.running = prepared.state
        try:
            self.on_commit(prepared.state.settings)
        except OSError as exc:
            self.console.warn("Warning: the state files could not be updated after the reload"
                              f" ({exc.strerror or exc}).")

    # -- the preparation (its own thread) ------------------------------------------------------

    def _prepare(self, generation: int) -> None:
        try:
            prepared = self.prepared(generation)
        except LauncherError as exc:
            lines = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            reason = lines.removeprefix("Error: ").rstrip(".") or "the download failed (see above)"
            prepared = Prepared(generation, failure=reason)
        except Exception as exc:  # a bug must not take the serving configuration down
            prepared = Prepared(generation, failure=f"unexpected {type(exc).__name__}: {exc}")
        self.mailbox.post(ReloadPrepared(prepared))

    def prepared(self, generation: int) -> Prepared:
        old = self.running
        settings, placement = self.place(load(self.environ, self.console.warn))
        plan = diff(old.settings, settings, old.placement, placement)
        if plan.refused:
            return Prepared(generation, failure="; ".join(plan.refused))
        timing = self.timing(settings)
        running = Running(settings, placement, old.internal)
        if plan.nothing:
            return Prepared(generation, summary=plan.summary(), nothing=True, timing=timing, state=running)
        moved = {c.name for c in plan.changes if c.action in (Action.ADDED, Action.REPLACED)}
        sources: dict[str, str] = {}
        if moved:
            backends = service_backends(settings, self.backend(settings))
            # Downloads happen now, before anything switches; the usual progress lines show.
            sources = self.cached(settings, backends, moved) or self.fetch(
                settings, backends, self.environ, self.console, None, Mailbox())
        internal = internal_ports(settings, placement, moved, old.internal, self.pick_ports)
        specs = build_plan(
            settings, tei_bin=self.tei_bin, keys=self.keys, model_sources=sources, parent_env=self.environ,
            internal_ports=internal, python=sys.executable, created=self.created, placement=placement,
        )  # fmt: skip
        gateway = specs[-1] if specs and specs[-1].kind == GATEWAY else None
        config_json = self.gateway_json(gateway, settings, generation)
        new_specs = tuple(
            replace(s, name=f"{s.name}@{generation}") for s in specs if s.kind != GATEWAY and s.service_name in moved
        )  # fmt: skip
        return Prepared(
            generation,
            summary=plan.summary(),
            new_specs=new_specs,
            retire=frozenset(c.name for c in plan.changes if c.action in (Action.REMOVED, Action.REPLACED)),
            gateway_spec=with_config_file(gateway, gateway_config_path(settings), config_json) if gateway else None,
            gateway_json=config_json,
            timing=timing,
            drain_timeout_s=settings.drain_timeout_s,
            state=Running(settings, placement, internal),
        )

    @staticmethod
    def cached(settings: Settings, backends: Mapping[str, str], moved: set[str]) -> dict[str, str] | None:
        """Every model's snapshot when each one that starts is complete in the cache already (no download
        worker to start: a reload of cached models is about TEI's load time), else None."""
        try:
            sources = local_sources(settings, backends)
        except LauncherError:
            return None
        return sources if all(name in sources for name in moved) else None

    @staticmethod
    def gateway_json(gateway: ChildSpec | None, settings: Settings, generation: int) -> str:
        """The gateway's configuration for this generation; its replaced routes close after the drain."""
        if gateway is None:
            return ""
        data = json.loads(gateway.env["EMBED_GATEWAY_CONFIG"])
        data["generation"] = generation
        data["retire_s"] = settings.drain_timeout_s + settings.stop_timeout_s + RETIRE_MARGIN_S
        return json.dumps(data, separators=(",", ":"))
