"""The service under a real systemd (252, Debian bookworm, PID 1 in podman), installed as the bare-metal guide says.

One machine for the whole module; the scenarios run in order, each starting from where the last one
left the service: install, serve, heal, get killed, get misconfigured, stop, upgrade, uninstall.
TEI is the stand-in (tests/fake_tei/) installed as /usr/local/bin/text-embeddings-router; the Hub
is the stand-in in this process, reached over the shared host network.
"""

from __future__ import annotations

import math
import re
import shlex
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_ports, wait_until
from fake_hub.server import SEND_CHUNK, HubStandIn

from systemd.booted import ROOT, Machine

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

UNIT = "embed-launcher.service"
DROP_IN_DIR = "/etc/systemd/system/embed-launcher.service.d"
ENV_FILE = "/etc/embed-launcher/embed.env"
DATA_DIR = "/var/lib/embed-launcher"
PIP_OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheels"}
TEI_WRAPPER = """#!/bin/sh
# The TEI stand-in, installed where TEI's binary goes.
export PYTHONDONTWRITEBYTECODE=1 FAKE_TEI_LOAD_S=0.2
exec /usr/bin/python3 /src/tests/fake_tei/text-embeddings-router "$@"
"""
SLOW_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SHORT_START_TIMEOUT_S = 4
SLOW_DOWNLOAD_S = 8.0
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def port(machine: Machine, hub: HubStandIn) -> int:
    """Prepare the machine as an admin would before installing; returns the embeddings port.

    TEI goes on PATH; the settings that keep everything on 127.0.0.1 go in a drop-in (what
    `systemctl edit` writes), so the installer's env file stays the shipped example.
    """
    embed_port, prometheus_port = free_ports(2)
    machine.write("/usr/local/bin/text-embeddings-router", TEI_WRAPPER, mode="0755")
    machine.write(f"{DROP_IN_DIR}/10-test.conf", (
        "[Service]\n"
        f"Environment=HF_ENDPOINT={hub.endpoint} EMBED_HOST=127.0.0.1 EMBED_SERVER_ADDR=127.0.0.1\n"
        f"Environment=EMBED_PORT={embed_port} EMBED_PROMETHEUS_PORT={prometheus_port}\n"
    ))
    return embed_port


def readme_commands() -> list[str]:
    """The shell lines of the first block of the bare-metal guide (docs/deployment/bare-metal.md), without sudo."""
    text = (ROOT / "docs" / "deployment" / "bare-metal.md").read_text()
    section = text[text.index("# Bare metal with systemd"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the bare-metal guide lost its command block"
    lines = [line.split("#", 1)[0].strip() for line in block[1].splitlines()]
    return [line.removeprefix("sudo ") for line in lines if line]


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def embed(port: int, key: str | None) -> int:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=b'{"input": "hello"}',
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def install(machine: Machine, *args: str) -> str:
    """Run the installer from the checkout, offline; returns its output."""
    cmd = "scripts/install-systemd.sh " + " ".join(map(shlex.quote, args))
    result = machine.sh(cmd, cwd="/src", env=PIP_OFFLINE, timeout_s=600)
    return result.stdout + result.stderr


def timed(machine: Machine, command: str) -> tuple[int, float]:
    """Run ``command`` inside and time it there (podman exec's own overhead is not the service's)."""
    out = machine.sh(f"s=$(date +%s%N); {command}; rc=$?; e=$(date +%s%N); echo $rc $(( (e - s) / 1000 ))",
                     check=False).stdout.split()
    return int(out[-2]), int(out[-1]) / 1e6


def test_readme_install_starts_a_serving_service(machine: Machine, port: int) -> None:
    """The guide's commands install and start it; `--enable` returns only once /health answers."""
    commands = readme_commands()
    assert commands[:2] == ["scripts/install-systemd.sh --dry-run", "scripts/install-systemd.sh --enable"]
    assert "systemctl enable --now" in install(machine, "--dry-run")
    assert machine.sh(f"test ! -e /etc/systemd/system/{UNIT}", check=False).returncode == 0  # dry run only
    out = install(machine, "--enable")
    assert "enabling and starting" in out
    assert health(port) == 200  # no polling: start returned after READY=1
    assert machine.show("ActiveState")["ActiveState"] == "active"
    assert machine.sh(f"stat -c '%a %U:%G' {ENV_FILE}").stdout.split() == ["640", "root:embed"]


def test_status_line_and_service_user(machine: Machine) -> None:
    """`systemctl status` shows the launcher's STATUS=; the launcher and TEI run as `embed`."""
    status = machine.show("StatusText")["StatusText"]
    assert status, "no STATUS= from the launcher"
    assert "Status:" in machine.sh(f"systemctl status --no-pager {UNIT}", check=False).stdout
    pids = [machine.main_pid(), *machine.tei_pids()]
    users = machine.sh("ps -o user= -p " + ",".join(map(str, pids))).stdout.split()
    assert users == ["embed"] * len(pids)


def test_getkey_through_the_installed_wrapper(machine: Machine, port: int) -> None:
    """`embed_manage --getkey` (the wrapper, as root) prints the generated key, which the server requires."""
    key = machine.sh("embed_manage --getkey").stdout
    assert key.startswith("embed-") and len(key) == 6 + 48
    assert embed(port, key) == 200
    assert embed(port, None) == 401


def test_killed_tei_is_healed_by_the_launcher(machine: Machine, port: int) -> None:
    """TEI SIGKILLed: the launcher starts a new one; systemd sees nothing (same MainPID, no restart)."""
    before = machine.show("MainPID", "NRestarts")
    old_tei = machine.tei_pid()
    assert old_tei in machine.tei_pids()
    machine.sh(f"kill -KILL {old_tei}")
    wait_until(lambda: machine.tei_pid() not in (None, old_tei) and health(port) == 200, timeout_s=30)
    assert machine.show("MainPID", "NRestarts") == before
    assert len(machine.tei_pids()) == 1


def test_systemctl_reload_applies_the_env_file_without_a_restart(machine: Machine, port: int) -> None:
    """`systemctl reload` (ExecReload: SIGHUP) re-reads the env file: the gateway's settings change, the
    launcher and its TEI keep running (same MainPID, same TEI pid, no restart), and the journal says so."""
    before = machine.show("MainPID", "NRestarts")
    tei = machine.tei_pid()
    cursor = machine.journal_cursor()
    machine.sh(f"cp {ENV_FILE} /root/embed.env.before && echo EMBED_GATEWAY_WAIT=12 >> {ENV_FILE}")
    try:
        machine.sh(f"systemctl reload {UNIT}")
        wait_until(lambda: "Reload complete" in machine.journal(cursor), timeout_s=60, interval_s=0.2)
        journal = machine.journal(cursor)
        assert "Reload complete: nothing to change" not in journal, journal
        assert "the gateway's settings are applied" in journal, journal
    finally:
        machine.sh(f"cp /root/embed.env.before {ENV_FILE}")  # cp keeps the file's owner and mode
    assert machine.show("MainPID", "NRestarts") == before
    assert machine.tei_pid() == tei and health(port) == 200


def test_killed_launcher_is_restarted_by_systemd_with_one_tei(machine: Machine, port: int) -> None:
    """Launcher SIGKILLed: systemd SIGKILLs its TEI (KillMode=mixed), restarts it; one TEI afterwards."""
    before = machine.show("MainPID", "NRestarts")
    old_tei = machine.tei_pid()
    cursor = machine.journal_cursor()
    machine.sh(f"kill -KILL {before['MainPID']}")

    def restarted() -> bool:
        now = machine.show("MainPID", "ActiveState")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

    wait_until(restarted, timeout_s=60, interval_s=0.2)
    journal = machine.journal(cursor)
    assert int(machine.show("NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1, journal
    assert health(port) == 200
    assert machine.tei_pids() == [machine.tei_pid()] and old_tei not in machine.tei_pids(), journal
    assert "code=killed, status=9/KILL" in journal
    # The old TEI got SIGTERM from the kernel (PR_SET_PDEATHSIG) and SIGKILL from systemd, whichever
    # came first; either way systemd restarted the launcher only once the cgroup was empty.


def test_first_start_longer_than_the_start_timeout_succeeds_while_downloading(
    machine: Machine, port: int, hub: HubStandIn
) -> None:
    """A download that outlasts TimeoutStartSec still ends in a started service: EXTEND_TIMEOUT_USEC."""
    repo = hub.repos[SLOW_MODEL]
    chunks = min(max(math.ceil(size / SEND_CHUNK) for size in repo.tei_files(b).values()) for b in ("onnx", "candle"))
    hub.chunk_delay_s = SLOW_DOWNLOAD_S / chunks
    machine.write(f"{DROP_IN_DIR}/20-slow-first-start.conf",
                  f"[Service]\nTimeoutStartSec={SHORT_START_TIMEOUT_S}\nEnvironment=EMBED_MODEL={SLOW_MODEL}\n")
    machine.sh("systemctl daemon-reload")
    cursor = machine.journal_cursor()
    try:
        rc, seconds = timed(machine, f"systemctl restart {UNIT}")
    finally:
        hub.chunk_delay_s = 0.0
        machine.sh(f"rm -f {DROP_IN_DIR}/20-slow-first-start.conf && systemctl daemon-reload")
    journal = machine.journal(cursor)
    assert rc == 0, journal
    assert seconds > SHORT_START_TIMEOUT_S, f"the download was too fast to prove anything ({seconds:.1f} s)"
    assert f"Downloading {SLOW_MODEL}" in journal
    assert "timed out" not in journal
    assert health(port) == 200
    machine.sh(f"systemctl restart {UNIT}")  # back to the default model, cached already


def test_config_error_exits_2_and_is_not_restarted(machine: Machine) -> None:
    """EMBED_PORT=abc in the env file: exit 2, the unit is failed (not auto-restarting), the journal says why."""
    before = machine.show("NRestarts")["NRestarts"]
    original = machine.sh(f"cat {ENV_FILE}").stdout
    cursor = machine.journal_cursor()
    machine.sh(f"echo EMBED_PORT=abc >> {ENV_FILE}")
    try:
        assert machine.sh(f"systemctl restart {UNIT}", check=False).returncode != 0
        state = machine.show("ActiveState", "SubState", "ExecMainStatus", "Result", "NRestarts")
        assert state == {"ActiveState": "failed", "SubState": "failed", "ExecMainStatus": "2",
                         "Result": "exit-code", "NRestarts": before}
        journal = machine.journal(cursor)
        assert "EMBED_PORT" in journal and "abc" in journal
    finally:
        machine.write(ENV_FILE, original, mode="0640")
        machine.sh(f"chown root:embed {ENV_FILE}")
    machine.sh(f"systemctl restart {UNIT}")


def test_stop_is_clean_and_quick(machine: Machine, port: int) -> None:
    """`systemctl stop` returns in under a second, exit 0, no TEI left."""
    rc, seconds = timed(machine, f"systemctl stop {UNIT}")
    assert rc == 0 and seconds < 1.0, f"stop took {seconds:.2f} s"
    state = machine.show("ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert machine.tei_pids() == []
    assert health(port) == 0


def test_installer_rerun_leaves_a_stopped_service_stopped(machine: Machine) -> None:
    """Re-run on a stopped service: installed again, still stopped, and it says so."""
    out = install(machine)
    assert "left stopped" in out
    assert machine.show("ActiveState")["ActiveState"] == "inactive"
    machine.sh(f"systemctl start {UNIT}")


def test_installer_rerun_without_changes_keeps_the_running_service(machine: Machine) -> None:
    """Idempotent: nothing changed, so no restart (same MainPID); --dry-run shows the restart it would do."""
    pid = machine.main_pid()
    assert f"systemctl restart {UNIT}" in install(machine, "--dry-run")
    out = install(machine, "--enable")
    assert "nothing changed" in out
    assert machine.main_pid() == pid


def test_installer_rerun_upgrades_the_running_service(machine: Machine, port: int) -> None:
    """New code: the running service is restarted onto it; config, key and models are kept."""
    key = machine.sh("embed_manage --getkey").stdout
    env_before = machine.sh(f"sha256sum {ENV_FILE}").stdout
    pid = machine.main_pid()
    machine.sh("sed -i 's/^__version__ = .*/__version__ = \"0.1.0+upgraded\"/' /src/embed_launcher/__init__.py")
    cursor = machine.journal_cursor()
    out = install(machine)
    assert "restarting it" in out
    assert machine.main_pid() != pid
    assert "0.1.0+upgraded" in machine.sh("/opt/embed-launcher/bin/embed-launcher --version").stdout
    assert health(port) == 200
    assert machine.sh("embed_manage --getkey").stdout == key
    assert machine.sh(f"sha256sum {ENV_FILE}").stdout == env_before
    assert "Downloading" not in machine.journal(cursor)  # the model stayed in the cache


def test_exposure_is_at_most_two(machine: Machine) -> None:
    """`systemd-analyze security` rates the installed unit 2.0 or lower."""
    out = machine.sh(f"systemd-analyze security --no-pager {UNIT}").stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out)[1])  # type: ignore[index]
    assert exposure <= MAX_EXPOSURE, out


def test_hardening_is_live_on_the_running_processes(machine: Machine) -> None:
    """The launcher and its TEI run with no capabilities, no new privileges and a seccomp filter."""
    for pid in (machine.main_pid(), machine.tei_pid()):
        status = dict(line.split(":\t", 1) for line in machine.sh(f"cat /proc/{pid}/status").stdout.splitlines()
                      if ":\t" in line)
        assert (status["CapBnd"], status["CapEff"]) == ("0000000000000000", "0000000000000000")
        assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")


def test_device_allow_globs_match_device_classes(machine: Machine) -> None:
    """`char-nvidia*` works because systemd matches char-GLOB against /proc/devices names.

    No GPU here, so the proof uses /dev/kmsg (class "mem"): refused under the unit's DevicePolicy=closed,
    admitted once a glob names its class.
    """
    probe = "systemd-run --wait --quiet -p DevicePolicy=closed {} sh -c 'exec 3</dev/kmsg'"
    assert machine.sh(probe.format(""), check=False).returncode != 0
    assert machine.sh(probe.format("-p 'DeviceAllow=char-me* r'"), check=False).returncode == 0
    unit = machine.sh(f"systemctl cat {UNIT}").stdout
    assert "DevicePolicy=closed" in unit and "DeviceAllow=char-nvidia* rw" in unit


def test_uninstall_keeps_data_and_purge_removes_it(machine: Machine) -> None:
    """--uninstall removes service, venv and wrapper, keeps config, key and models; --purge removes those."""
    machine.sh(f"rm -rf {DROP_IN_DIR}")
    install(machine, "--uninstall")
    assert machine.sh(f"systemctl cat {UNIT}", check=False).returncode != 0
    removed = "test ! -e /opt/embed-launcher && test ! -e /usr/local/bin/embed_manage"
    assert machine.sh(removed, check=False).returncode == 0
    assert machine.tei_pids() == []
    kept = f"test -s {DATA_DIR}/.api_key && test -f {ENV_FILE} && ls -d {DATA_DIR}/models--* && id embed"
    assert machine.sh(kept, check=False).returncode == 0
    install(machine, "--uninstall", "--purge")
    gone = f"test ! -e {DATA_DIR} && test ! -e /etc/embed-launcher && ! id embed"
    assert machine.sh(gone, check=False).returncode == 0


def test_readme_mentions_every_command_tested() -> None:
    """The guide's block is what the first scenario runs (plus journalctl -fu and the key)."""
    assert readme_commands()[2:] == ["journalctl -fu embed-launcher", "embed_manage --getkey"]
    assert Path(ROOT / "scripts" / "install-systemd.sh").exists()
