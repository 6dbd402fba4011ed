"""The supervisor's reload (blue-green) driven by scripted events: fake clock, spawner, reaper and reloader."""

from __future__ import annotations

import errno
import functools
import io
import os
import signal
from pathlib import Path

import pytest
from test_manage_reload import publish, run_reload
from test_supervisor import OK, FakeNotifier, FakeSpawner

from embed_launcher.datadir.atomic import atomic_write
from embed_launcher.reporting.console import Console
from embed_launcher.startup import reloading
from embed_launcher.supervision.child import Timing
from embed_launcher.supervision.events import GatewayRouted, ReloadPrepared, SignalReceived
from embed_launcher.supervision.plan import ChildSpec
from embed_launcher.supervision.reload import SETTLE_S, SWITCH_TIMEOUT_S, Prepared
from embed_launcher.supervision.supervisor import Supervisor


def spec(name: str, kind: str = "embed", service: str = "") -> ChildSpec:
    return ChildSpec(name=name, label="Gateway" if kind == "gateway" else "Embeddings", model="m", argv=("x",),
                     env={}, port=9000, health_url="http://127.0.0.1:9000/health", kind=kind, service=service)


class FakeReloader:
    def __init__(self) -> None:
        self.asked: list[int] = []
        self.written: list[str] = []
        self.commits: list[int] = []

    def prepare(self, generation: int) -> None:
        self.asked.append(generation)

    def write_gateway_config(self, text: str) -> None:
        self.written.append(text)

    def committed(self, prepared: Prepared) -> None:
        self.commits.append(prepared.generation)


class Run:
    def __init__(self) -> None:
        self.now = 0.0
        self.spawner, self.reloader = FakeSpawner(), FakeReloader()
        self.out, self.err = io.StringIO(), io.StringIO()
        self.exits: list[tuple[int, int]] = []
        self.published: list[dict[str, object]] = []
        self.sup = Supervisor(
            [spec("embed"), spec("gateway", "gateway")], console=Console(self.out, self.err, colour=False),
            spawner=self.spawner, timing=Timing(ready_timeout_s=30.0), clock=lambda: self.now,
            notifier=FakeNotifier(), reaper=self.reap, reloader=self.reloader, gateway_json='{"generation":1}',
            status_sink=lambda s: self.published.append(dict(s)),
        )  # fmt: skip
        self.sup.start_all(0.0)
        for name in ("embed", "gateway"):
            self.ready(name)

    def reap(self) -> list[tuple[int, int]]:
        exits, self.exits = self.exits, []
        return exits

    def ready(self, name: str) -> None:
        child = self.sup.child_named(name)
        self.sup.handle_probe(name, child.generation, OK)

    def pid(self, name: str) -> int:
        handle = self.sup.child_named(name).handle
        assert handle is not None
        return handle.pid

    def exit(self, name: str, code: int) -> None:
        self.exits.append((self.pid(name), code))
        self.sup.reap_children()
        self.sup.purge_retired()

    def at(self, t: float) -> None:
        self.now = t
        self.sup.tick(t)

    def replace_embed(self) -> None:
        """SIGHUP, and the launcher's answer: embed is replaced by embed@2."""
        self.sup.dispatch(SignalReceived(signal.SIGHUP))
        assert self.reloader.asked == [2]
        prepared = Prepared(2, summary="replaced embed (m)", new_specs=(spec("embed@2", service="embed"),),
                            retire=frozenset({"embed"}), gateway_spec=spec("gateway", "gateway"),
                            gateway_json='{"generation":2}', drain_timeout_s=5.0)
        self.sup.dispatch(ReloadPrepared(prepared))

    def names(self) -> list[str]:
        return [c.spec.name for c in self.sup.children]


def test_blue_green_old_tei_stops_only_after_the_gateway_switched() -> None:
    run = Run()
    old = run.pid("embed")
    run.replace_embed()
    assert run.names() == ["embed", "embed@2", "gateway"]  # both generations run
    assert run.published[-1]["services"]["embed@2"]["generation"] == 2  # type: ignore[index]
    run.ready("embed@2")
    run.at(1.0)
    assert run.reloader.written == ['{"generation":2}']
    assert (run.pid("gateway"), signal.SIGHUP) in run.spawner.signals
    assert (old, signal.SIGTERM) not in run.spawner.signals  # not before the gateway's word
    run.sup.dispatch(GatewayRouted(2))
    assert run.reloader.commits == [2]
    run.at(1.0 + SETTLE_S)
    assert (old, signal.SIGTERM) in run.spawner.signals
    assert run.published[-1]["services"]["embed"]["draining"] is True  # type: ignore[index]
    run.exit("embed", 0)
    run.at(2.0)
    assert run.names() == ["embed@2", "gateway"]
    assert "Reload complete: configuration 2 serves (replaced embed (m))." in run.out.getvalue()
    assert run.published[-1]["reload"]["state"] == "ok"  # type: ignore[index]


def test_a_gateway_refusal_stops_the_new_tei_and_keeps_the_old_routes() -> None:
    run = Run()
    old = run.pid("embed")
    run.replace_embed()
    run.ready("embed@2")
    run.at(1.0)
    new = run.pid("embed@2")
    run.sup.dispatch(GatewayRouted(2, "restart required (listen changed)"))
    assert (new, signal.SIGTERM) in run.spawner.signals and (old, signal.SIGTERM) not in run.spawner.signals
    assert '"generation":3' in run.reloader.written[-1]  # the previous routes, under a newer number
    assert ("Reload failed: the gateway refused the new routes: restart required (listen changed); still serving"
            " the previous configuration") in run.err.getvalue()
    run.exit("embed@2", 0)
    assert run.names() == ["embed", "gateway"] and run.reloader.commits == []


def test_no_word_from_the_gateway_fails_the_reload_at_the_switch_timeout() -> None:
    run = Run()
    run.replace_embed()
    run.ready("embed@2")
    run.at(1.0)
    run.at(1.0 + SWITCH_TIMEOUT_S)
    assert "Reload failed: the gateway did not apply the new routes" in run.err.getvalue()


class DiskReloader(FakeReloader):
    """Writes the gateway's routes file as the launcher does (LauncherReloader.write_file), in ``data``."""

    def __init__(self, data: Path) -> None:
        super().__init__()
        self.path = data / reloading.GATEWAY_CONFIG_FILE

    def write_gateway_config(self, text: str) -> None:
        reloading.LauncherReloader.write_file(self.path, text)
        self.written.append(text)


def test_a_full_disk_at_the_switch_fails_the_reload_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC writing .gateway.json once the new TEI is ready: the reload fails as a whole; the old routes file,
    the old TEI and the gateway stay as they were, the new TEI stops, and `embed_manage --reload` exits 1."""
    data = tmp_path / "data"
    data.mkdir()
    run = Run()
    disk = run.reloader = run.sup.reloader = DiskReloader(data)
    disk.path.write_text('{"generation":1}')
    gateway = run.sup.child_named("gateway")
    gateway_spec = gateway.spec

    def full_disk(fd: int, payload: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reloading, "atomic_write", functools.partial(atomic_write, write=full_disk))
    run.replace_embed()  # the SIGHUP reaches the gateway too (its keys file): signals from here on count
    sent = len(run.spawner.signals)
    run.ready("embed@2")
    new = run.pid("embed@2")
    run.at(1.0)  # the new TEI is ready: the switch writes the routes file and fails
    assert ("Reload failed: cannot write the gateway's configuration (No space left on device); still serving the"
            " previous configuration") in run.err.getvalue()
    assert run.spawner.signals[sent:] == [(new, signal.SIGTERM)]  # neither the old TEI nor the gateway
    assert sorted(p.name for p in data.iterdir()) == [".gateway.json"]  # the old file, no temp file left
    assert disk.path.read_text() == '{"generation":1}'
    assert gateway.spec is gateway_spec and run.reloader.commits == []
    record = run.published[-1]["reload"]
    assert record["state"] == "failed" and run.published[-1]["generation"] == 1  # type: ignore[index]
    run.exit("embed@2", 0)
    assert run.names() == ["embed", "gateway"]
    # What `embed_manage --reload` makes of the record the launcher published: exit 1, the reason.
    publish(tmp_path, None)
    code, _, err = run_reload(tmp_path, record)  # type: ignore[arg-type]
    assert code == 1 and "cannot write the gateway's configuration (No space left on device)" in err
    # Room again: the next reload switches.
    monkeypatch.setattr(reloading, "atomic_write", atomic_write)
    run.sup.dispatch(SignalReceived(signal.SIGHUP))
    prepared = Prepared(3, summary="replaced embed (m)", new_specs=(spec("embed@3", service="embed"),),
                        retire=frozenset({"embed"}), gateway_spec=spec("gateway", "gateway"),
                        gateway_json='{"generation":3}', drain_timeout_s=5.0)
    run.sup.dispatch(ReloadPrepared(prepared))
    run.ready("embed@3")
    run.at(2.0)
    assert disk.path.read_text() == '{"generation":3}'
    run.sup.dispatch(GatewayRouted(3))
    assert run.reloader.commits == [3]


def test_a_new_tei_that_exits_fails_the_reload_and_is_not_restarted() -> None:
    run = Run()
    run.replace_embed()
    run.exit("embed@2", 2)
    assert "Reload failed: the new embeddings server failed to start (exit 2)" in run.err.getvalue()
    run.at(60.0)
    assert run.names() == ["embed", "gateway"]
    assert [name for name, _ in run.spawner.spawned].count("embed@2") == 1


def test_a_sighup_during_a_reload_queues_one_more() -> None:
    run = Run()
    run.replace_embed()
    run.sup.dispatch(SignalReceived(signal.SIGHUP))
    run.sup.dispatch(SignalReceived(signal.SIGHUP))
    assert run.reloader.asked == [2]
    run.exit("embed@2", 2)  # the first one fails ...
    assert run.reloader.asked == [2, 3]  # ... and one more (for both SIGHUPs) starts


def test_the_record_of_a_queued_reload_is_its_own() -> None:
    """`embed_manage --reload` waits for a record numbered after the one it saw: a SIGHUP during a reload
    gets the outcome of the reload it queued, not of the one that was running."""
    run = Run()
    run.replace_embed()  # reload 1
    run.sup.dispatch(SignalReceived(signal.SIGHUP))  # reload 2, queued
    run.exit("embed@2", 2)
    assert run.published[-1]["reload"]["seq"] == 1  # type: ignore[index]
    assert run.published[-1]["reload"]["state"] == "failed"  # type: ignore[index]
    run.sup.dispatch(ReloadPrepared(Prepared(3, summary="no model changed", nothing=True)))
    assert run.published[-1]["reload"] == {**run.published[-1]["reload"], "seq": 2, "state": "ok"}  # type: ignore[dict-item]


def test_a_new_tei_that_crashes_after_the_switch_is_restarted_like_any_other() -> None:
    run = Run()
    run.replace_embed()
    run.ready("embed@2")
    run.at(1.0)
    run.sup.dispatch(GatewayRouted(2))
    run.exit("embed@2", 1)
    assert "Reload failed" not in run.err.getvalue()
    assert "Restarting embeddings server" in run.err.getvalue()
    run.at(1.0 + SETTLE_S)
    run.exit("embed", 0)
    run.at(3.0)
    assert "Reload complete" in run.out.getvalue()
    assert [name for name, _ in run.spawner.spawned].count("embed@2") == 2
