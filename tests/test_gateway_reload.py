"""The gateway's route reload (SIGHUP + EMBED_GATEWAY_CONFIG_FILE): the switch under load, and refusals."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx
import pytest
from conftest import free_ports, wait_until
from gateway_harness import CREATED, EMBED_KEY, Tei, auth, model_entry, start_gateway

pytestmark = pytest.mark.integration


def write_config(path: Path, gateway_ports: list[int], models: list[dict[str, object]], generation: int,
                 **extra: object) -> None:
    config = {"listen": [{"host": "127.0.0.1", "port": gateway_ports[0], "routes": "all"},
                         {"host": "127.0.0.1", "port": gateway_ports[1], "routes": "rerank"}],
              "models": models, "wait_s": 10.0, "access_log": False, "workers": 1, "created": CREATED,
              "generation": generation, "retire_s": 5.0, **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config))
    tmp.replace(path)


class Load:
    """Requests to one model, one after another, in a thread, counting the answers that were not 200."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.ok, self.failed = 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url, json={"model": self.model, "input": ["hello"]}, headers=auth())
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_sighup_switches_routes_under_load_without_a_failed_request(tmp_path: Path) -> None:
    ports = free_ports(3)
    old = Tei(tmp_path, "org/a", "embed", ports[0], EMBED_KEY).start()
    new = Tei(tmp_path, "org/a", "embed", ports[1], EMBED_KEY).start()
    extra = Tei(tmp_path, "org/b", "embed", ports[2], EMBED_KEY).start()
    teis = [old, new, extra]
    path = tmp_path / "gateway.json"
    gateway = None
    try:
        for tei in teis:
            tei.wait_ready()
        gateway = start_gateway(tmp_path, [model_entry(old, aliases=["a"], default=True)],
                                env={"EMBED_GATEWAY_CONFIG_FILE": str(path)})
        url = gateway.url("/v1/embeddings")
        with Load(url, "a") as load:
            wait_until(lambda: load.ok >= 20)
            write_config(path, gateway.ports, [model_entry(new, aliases=["a"], default=True),
                                               model_entry(extra, aliases=["b"], default=False)], 1)
            gateway.proc.send_signal(signal.SIGHUP)
            gateway.wait_for("Gateway routes: configuration 1 in force")
            assert old.proc is not None
            old.proc.send_signal(signal.SIGTERM)  # what the launcher does once the switch took effect
            assert old.proc.wait(timeout=10) == 0
            before = load.ok
            wait_until(lambda: load.ok >= before + 20)
        assert load.failed == []
        answer = httpx.post(url, json={"model": "b", "input": ["x"]}, headers=auth(), timeout=10)
        assert answer.status_code == 200
        # A stale generation is ignored; a listener change is refused and the routes stay.
        write_config(path, [ports[0], gateway.ports[1]], [model_entry(new, aliases=["a"], default=True)], 2)
        gateway.proc.send_signal(signal.SIGHUP)
        gateway.wait_for("Gateway routes: configuration 2 refused: restart required (listen changed)")
        assert httpx.post(url, json={"model": "b", "input": ["x"]}, headers=auth(), timeout=10).status_code == 200
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        for tei in teis:
            tei.kill()
    assert "Unclosed" not in gateway.output()


def test_new_teis_that_never_answer_leave_the_routes_as_they_were(tmp_path: Path) -> None:
    ports = free_ports(2)
    tei = Tei(tmp_path, "org/a", "embed", ports[0], EMBED_KEY).start()
    path = tmp_path / "gateway.json"
    gateway = None
    try:
        tei.wait_ready()
        gateway = start_gateway(tmp_path, [model_entry(tei, aliases=["a"], default=True)],
                                env={"EMBED_GATEWAY_CONFIG_FILE": str(path)})
        nobody = {"name": "org/a", "aliases": ["a"], "kind": "embed", "upstream": f"http://127.0.0.1:{ports[1]}",
                  "max_client_batch_size": 512, "default": True}
        write_config(path, gateway.ports, [nobody], 1)
        gateway.proc.send_signal(signal.SIGHUP)
        gateway.wait_for("Gateway routes: configuration 1 refused: its new TEIs did not answer /health", 20)
        answer = httpx.post(gateway.url("/v1/embeddings"), json={"model": "a", "input": ["x"]}, headers=auth())
        assert answer.status_code == 200
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        tei.kill()
