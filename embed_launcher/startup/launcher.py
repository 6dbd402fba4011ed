"""The start sequence: config -> data dir and keys -> preflight -> banner -> plan -> supervisor."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from embed_launcher.config.load import load
from embed_launcher.config.settings import Settings
from embed_launcher.datadir.directory import DataDir
from embed_launcher.datadir.keys import ApiKeys, KeyResolution
from embed_launcher.datadir.persistence import in_container, is_persistent
from embed_launcher.models.backend import resolve_tei_bin, tei_backend
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_OK
from embed_launcher.startup.address import UNKNOWN, AddressLookup
from embed_launcher.startup.banner import (
    Endpoint,
    more_models_lines,
    not_persistent_note,
    ready_banner,
    replicas_lines,
    start_banner,
)
from embed_launcher.startup.download_phase import fetch_models, give_up_advice, service_backends
from embed_launcher.startup.gpus import run_smi, usable_cpus, usable_gpus
from embed_launcher.startup.keys_file import check_keys_file
from embed_launcher.startup.preflight import check_ports, free_local_ports
from embed_launcher.startup.reloading import LauncherReloader, Running, gateway_config_path, with_config_file
from embed_launcher.supervision.child import Timing
from embed_launcher.supervision.events import GatewayRouted, Mailbox, ReadyLogged
from embed_launcher.supervision.notify import Notifier
from embed_launcher.supervision.placement import Placement, place, several
from embed_launcher.supervision.plan import GATEWAY, ChildSpec, build_plan, replica_name
from embed_launcher.supervision.policy import RestartPolicy
from embed_launcher.supervision.process import Spawner
from embed_launcher.supervision.publish import StatusPublisher
from embed_launcher.supervision.status import HEARTBEAT_S
from embed_launcher.supervision.supervisor import Supervisor

PORT_VARIABLES = {"embed": ("EMBED_PORT", "EMBED_PROMETHEUS_PORT"), "rerank": ("RERANK_PORT", "RERANK_PROMETHEUS_PORT")}


def read_mounts() -> str:
    """The mount table ("" if unreadable: then no volume is detected)."""
    try:
        return Path("/proc/mounts").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def timing(settings: Settings) -> Timing:
    """The supervisor's numbers from the settings."""
    return Timing(
        ready_timeout_s=settings.ready_timeout_s,
        stop_timeout_s=settings.stop_timeout_s,
        health_interval_s=settings.health_interval_s,
        health_timeout_s=min(5.0, settings.health_interval_s),
        health_failures=settings.health_failures,
        hang_timeout_s=settings.hang_timeout_s,
        policy=RestartPolicy(
            initial_delay_s=settings.restart_delay_s,
            max_delay_s=settings.restart_max_delay_s,
            max_start_failures=settings.start_retries,
            reset_after_s=settings.backoff_reset_after_s,
        ),
    )


def fallback_address(host: str, inside_container: bool) -> str:
    """What the banner shows when no address was given or found."""
    if not ipaddress.ip_address(host).is_unspecified:
        return host
    return UNKNOWN if inside_container else socket.gethostname()


ROUTED = "Gateway routes: configuration "  # gateway/reconfigure.py: "... N in force" or "... N refused: why"


def routed_event(text: str) -> GatewayRouted | None:
    """The gateway's word on a reload's routes, from its output line."""
    at = text.find(ROUTED)
    if at < 0:
        return None
    number, _, rest = text[at + len(ROUTED):].partition(" ")
    if not number.isdigit():
        return None
    refusal = rest.removeprefix("refused: ") if rest.startswith("refused: ") else None
    return GatewayRouted(int(number), refusal)


def is_ready_line(text: str) -> bool:
    """TEI's last start-up line, in text or JSON log format (tei-contract §2; the relay passes a JSON
    line's message: `Ready`), or the gateway's."""
    return (text == "Ready" or text.endswith(": Ready") or '"message":"Ready"' in text
            or text.startswith("Gateway ready"))


class Launcher:
    """One start of the server: prepares everything, then hands over to the supervisor."""

    def __init__(
        self,
        environ: Mapping[str, str],
        console: Console,
        notifier: Notifier | None = None,
        *,
        fetch: Callable[..., dict[str, str]] = fetch_models,
        pick_ports: Callable[[int], list[int]] = free_local_ports,
        smi: Callable[[str], str] = run_smi,
        cpus: Callable[[], tuple[int, ...]] = usable_cpus,
    ) -> None:
        self.environ = environ
        self.console = console
        self.notifier = notifier
        self.fetch = fetch  # the download phase (a seam: tests replace it)
        self.pick_ports = pick_ports  # free ports on 127.0.0.1 for the TEIs behind the gateway
        self.smi, self.cpus = smi, cpus  # `nvidia-smi -L` and the usable cores (seams for tests)
        self.started = time.time()

    def run(self, *, check_only: bool = False) -> int:
        """Start and supervise; returns the process exit code."""
        settings = load(self.environ, self.console.warn)
        self.console.use_format(settings.log_format)
        settings, placement = self.place_replicas(settings)
        check_keys_file(settings, self.console.warn)
        tei_bin = resolve_tei_bin(settings.tei_bin, self.environ.get("PATH", os.defpath))
        if check_only:
            self.console.info("Configuration is valid.")
            return EXIT_OK
        data = DataDir(settings.data_dir)
        data.ensure()
        publish = StatusPublisher(data.write_status, data.status_path, self.console.warn, self.console.info)
        keys, notices = self.prepare_keys(settings, data)
        check_ports(settings.host, self.ports_to_check(settings))
        mailbox = Mailbox()
        mailbox.install_signal_handlers()
        auth = {"embed": bool(keys.embed_key), "rerank": bool(keys.rerank_key)}
        shown = tuple(
            Endpoint(s.name, s.label, s.model, s.port, auth[s.name])
            for s in (settings.embed, settings.rerank) if s.enabled
        )  # fmt: skip
        more = more_models_lines(settings.services, gateway=settings.gateway) + replicas_lines(settings, placement)
        self.console.lines(start_banner(shown, notices=notices, local_only=settings.local_only) + more)
        address = self.start_address_lookup(settings, data)
        self.write_state(settings, data, auth, address.address)
        self.publish_preparing(settings, publish)
        backends = service_backends(settings, tei_backend(settings.backend, tei_bin, self.environ))
        sources = self.fetch(
            settings, backends, self.environ, self.console, self.notifier, mailbox,
            heartbeat=lambda: self.write_preparing(settings, publish),
        )  # fmt: skip
        # Only now, just before the TEIs start: ports picked before a download of many minutes
        # would have been free for anyone else to take meanwhile.
        internal = self.internal_ports(settings, placement)
        specs = build_plan(
            settings,
            tei_bin=tei_bin,
            keys={"embed": keys.embed_key, "rerank": keys.rerank_key},
            model_sources=sources,
            parent_env=self.environ,
            internal_ports=internal,
            python=sys.executable,
            created=int(self.started),
            placement=placement,
        )
        advise = give_up_advice(settings, backends)
        banner = lambda: ready_banner(shown, address.address) + more  # noqa: E731
        specs, gateway_json = self.with_reload_file(settings, specs)
        reloader = LauncherReloader(
            Running(settings, placement, internal or {}), environ=self.environ, console=self.console,
            mailbox=mailbox, fetch=self.fetch, pick_ports=self.pick_ports, place=self.place_replicas, timing=timing,
            tei_bin=tei_bin, backend=lambda s: tei_backend(s.backend, tei_bin, self.environ),
            keys={"embed": keys.embed_key, "rerank": keys.rerank_key}, created=int(self.started),
            on_commit=lambda new: self.write_state(new, data, auth, address.address),
        )  # fmt: skip
        return self.supervise(settings, specs, publish, mailbox, banner, advise, reloader, gateway_json)

    def with_reload_file(self, settings: Settings, specs: tuple[ChildSpec, ...]) -> tuple[tuple[ChildSpec, ...], str]:
        """The gateway learns where reloads write its routes; the file starts as its first configuration
        (generation 1), so a SIGHUP before any reload never applies a stale file of an earlier run."""
        if not specs or specs[-1].kind != GATEWAY:
            return specs, ""
        path = gateway_config_path(settings)
        config = LauncherReloader.gateway_json(specs[-1], settings, 1)
        try:
            LauncherReloader.write_file(path, config)
        except OSError as exc:
            self.console.warn(f"Warning: cannot write {path} ({exc.strerror or exc}); reloads will fail until it"
                              " can be written.")
        return (*specs[:-1], with_config_file(specs[-1], path, config)), config

    def prepare_keys(self, settings: Settings, data: DataDir) -> tuple[KeyResolution, tuple[str, ...]]:
        """Resolve the API keys by the original's rules; return them and the notes to print."""
        existing = data.is_existing_install()
        inside = in_container(self.environ)
        persistent = settings.data_persistent
        if persistent is None:
            persistent = is_persistent(settings.data_dir.resolve(), in_container=inside, mounts_text=read_mounts())
        keys = ApiKeys(data).resolve(
            settings.embed.api_key, settings.rerank.api_key, persistent=persistent, existing=existing
        )
        notices = tuple(not_persistent_note(str(settings.data_dir))) if inside and not persistent else ()
        return keys, notices + keys.notices

    @staticmethod
    def ports_to_check(settings: Settings) -> list[tuple[str, int]]:
        """The public ports (and, without the gateway, TEI's Prometheus ports) with their variables."""
        ports = []
        for service in (settings.embed, settings.rerank):
            if not service.enabled:
                continue
            port_var, prometheus_var = PORT_VARIABLES[service.name]
            ports.append((port_var, service.port))
            if not settings.gateway:
                ports.append((prometheus_var, service.prometheus_port))
        if settings.gateway and not settings.embed.enabled and any(s.kind != "rerank" for s in settings.services):
            ports.append(("EMBED_PORT", settings.embed.port))  # sparse models are served there
        return list(dict.fromkeys(ports))

    def place_replicas(self, settings: Settings) -> tuple[Settings, Placement]:
        """Each model's replicas on the usable GPUs (or CPU cores); several replicas turn the gateway on."""
        gpus, source = usable_gpus(settings.gpus, self.environ, self.smi)
        placement = place(settings.services, gpus, self.cpus(), gpu_source=source,
                          gateway_allowed=settings.gateway_allowed)
        if several(placement) and not settings.gateway:
            settings = replace(settings, gateway=True)  # EMBED_GATEWAY=auto: replicas share one door
        return settings, placement

    def internal_ports(
        self, settings: Settings, placement: Placement | None = None
    ) -> dict[str, tuple[int, int]] | None:
        """Behind the gateway, each TEI (each replica) gets a port and a Prometheus port on 127.0.0.1, chosen now."""
        if not settings.gateway:
            return None
        names = []
        for s in settings.services:
            count = len((placement or {}).get(s.name, ())) or 1
            names += [replica_name(s.name, i, count) for i in range(count)]
        ports = self.pick_ports(2 * len(names))
        return {name: (ports[2 * i], ports[2 * i + 1]) for i, name in enumerate(names)}

    def start_address_lookup(self, settings: Settings, data: DataDir) -> AddressLookup:
        """The advertised address: given, or looked up in the background (never in local-only mode)."""
        lookup = AddressLookup(
            settings.server_addr,
            enabled=not settings.local_only,
            fallback=fallback_address(settings.host, in_container(self.environ)),
            on_found=data.write_server_addr,
            warn=self.console.warn,
        )
        lookup.start()
        return lookup

    @staticmethod
    def write_state(settings: Settings, data: DataDir, auth: Mapping[str, bool], addr: str) -> None:
        data.write_state(
            embed_port=settings.embed.port,
            embed_model=settings.embed.model,
            embed_active=settings.embed.enabled,
            rerank_port=settings.rerank.port,
            rerank_model=settings.rerank.model,
            rerank_active=settings.rerank.enabled,
            embed_auth=auth["embed"],
            rerank_auth=auth["rerank"],
            server_addr=addr,
        )

    def publish_preparing(self, settings: Settings, publish: StatusPublisher) -> None:
        """Before any TEI runs: say so to `embed_manage --status` and to systemd (models may take a while)."""
        self.write_preparing(settings, publish)
        if self.notifier is not None:
            self.notifier.status("checking and downloading models")

    def write_preparing(self, settings: Settings, publish: StatusPublisher) -> None:
        """The live status while models download (rewritten every heartbeat, for embed_manage --alive)."""
        services = {
            s.name: {"model": s.model, "port": s.port, "pid": None, "state": "preparing"} for s in settings.services
        }
        publish({
            "launcher_pid": os.getpid(), "started": round(self.started, 3), "stopping": False,
            "updated": round(time.time(), 3), "heartbeat_s": HEARTBEAT_S, "services": services,
        })  # fmt: skip

    def supervise(
        self,
        settings: Settings,
        specs: tuple[ChildSpec, ...],
        publish: StatusPublisher,
        mailbox: Mailbox,
        banner: Callable[[], Sequence[str]],
        advise: Callable[[ChildSpec, Sequence[str]], str | None],
        reloader: LauncherReloader | None = None,
        gateway_json: str = "",
    ) -> int:
        """Hand the children to the supervisor loop."""
        pid = os.getpid()

        def status_sink(status: Mapping[str, object]) -> None:
            publish({**status, "launcher_pid": pid, "started": round(self.started, 3)})

        def on_line(name: str, text: str) -> None:
            if is_ready_line(text):
                mailbox.post(ReadyLogged(name))
            elif name == GATEWAY and (routed := routed_event(text)) is not None:
                mailbox.post(routed)

        supervisor = Supervisor(
            specs,
            console=self.console,
            spawner=Spawner(self.console, on_line=on_line),
            mailbox=mailbox,
            timing=timing(settings),
            notifier=self.notifier,
            banner=banner,
            status_sink=status_sink,
            advise=advise,
            reloader=reloader,
            gateway_workers=settings.gateway_workers,
            gateway_json=gateway_json,
        )
        return supervisor.run()
