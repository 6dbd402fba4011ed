"""The offline overlay's volume layout works with the real launcher: a Job-style pull into a
"claim" directory, then a local-only start whose data directory is writable while each model
folder is bind-mounted read-only into it, exactly as deploy/kubernetes/overlays/offline mounts
them (read from the rendered manifest). Runs the launcher in a private mount namespace, so it
needs root or user namespaces; skipped, saying why, where `unshare --mount` is refused."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import k8s_manifests as km
import pytest
from conftest import LauncherRun, clean_up, free_ports, make_tei, manage
from fake_hub.server import HubStandIn

pytestmark = pytest.mark.integration


def _unshare_mount_works() -> str | None:
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if proc.returncode == 0 else proc.stderr.strip() or f"exit {proc.returncode}"


def _offline_layout(components: tuple[str, ...], scratch: Path) -> tuple[dict[str, str], dict[str, str],
                                                                         list[tuple[str, str]]]:
    """(settings given, over defaults, [(subPath, path in the data dir)] of read-only claim mounts)."""
    if km.kubectl() is None:
        pytest.skip("kubectl is not installed: cannot render the offline overlay to read its layout")
    docs = km.render(km.variant_dir("offline", components, scratch))
    cfg = km.config(docs)
    _, spec, container = km.server(docs)
    claims = {v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    data_dir = cfg["EMBED_DATA_DIR"].rstrip("/")
    mounts = []
    for m in container["volumeMounts"]:
        if m["name"] in claims:
            assert m.get("readOnly") and m["mountPath"].startswith(data_dir + "/"), m
            mounts.append((m["subPath"], m["mountPath"][len(data_dir) + 1:]))
    return km.settings(docs), cfg, mounts


@pytest.mark.parametrize("components", [(), ("rerank", "offline-rerank")], ids=["embed", "embed+rerank"])
def test_local_only_start_from_read_only_model_folders(tmp_path: Path, hub: HubStandIn,
                                                       components: tuple[str, ...]) -> None:
    why = _unshare_mount_works()
    if why:
        pytest.skip(f"unshare --mount is refused here ({why}): cannot bind-mount read-only")
    given, cfg, mounts = _offline_layout(components, tmp_path / "kustomize")
    models = km.enabled_models(cfg)
    assert cfg["EMBED_LOCAL_ONLY"] == "true" and len(mounts) == len(models)

    # The Job: embed_manage --pullmodel (one container per model) with the claim as its data dir.
    claim, data = tmp_path / "claim", tmp_path / "data"
    claim.mkdir()
    data.mkdir()
    for model in models:
        pulled = manage(claim, "--pullmodel", model, env={"HF_ENDPOINT": hub.endpoint})
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    before = sorted((str(p), p.stat().st_mtime_ns) for p in claim.rglob("*"))

    # The pod: the data dir writable (emptyDir), each model folder a read-only bind (subPath).
    script = ["set -e"]
    for sub, rel in mounts:
        src, dst = shlex.quote(str(claim / sub)), shlex.quote(str(data / rel))
        script += [f"mkdir -p {dst}", f"mount --bind {src} {dst}", f"mount -o remount,bind,ro {dst}",
                   f"if touch {dst}/.write-test 2>/dev/null; then echo 'not read-only: {rel}'; exit 97; fi"]
    script.append(f"exec {shlex.quote(sys.executable)} -m embed_launcher")
    names = ("EMBED_PORT", "EMBED_PROMETHEUS_PORT", "RERANK_PORT", "RERANK_PROMETHEUS_PORT")
    ports = dict(zip(names, map(str, free_ports(len(names))), strict=True))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **given,
        **ports,
        "EMBED_API_KEY": "embed-from-the-secret",  # the Secret's key, as secretKeyRef gives it
        "EMBED_DATA_DIR": str(data),
        "EMBED_ENV_FILE": str(tmp_path / "no.env"),
        "EMBED_TEI_BIN": str(make_tei(tmp_path, load_s=0.1)),
        "EMBED_HOST": "127.0.0.1",
        "EMBED_STOP_TIMEOUT": "3",
        "EMBED_READY_TIMEOUT": "20",
        "HF_ENDPOINT": hub.endpoint,
    }
    hub.clear_log()
    log_path = tmp_path / "launcher.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    run = LauncherRun(proc, log_path, env, data, {k: int(v) for k, v in ports.items()})
    try:
        run.wait_for("Text embeddings & reranking server is ready" if len(models) > 1 else
                     "Text embeddings server is ready")
        assert manage(data, "--status").returncode == 0
        for service, model in zip(("embed", "rerank"), models, strict=False):
            argv = run.child_argv(service)
            model_id = argv[argv.index("--model-id") + 1]
            assert model_id.startswith(str(data / ("models--" + model.replace("/", "--"))) + "/snapshots/")
        assert hub.log == []  # local-only: not one request
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 0
    finally:
        clean_up([run])
    assert sorted((str(p), p.stat().st_mtime_ns) for p in claim.rglob("*")) == before  # nothing written
    assert (data / ".api_key").is_file() and (data / ".status.json").is_file()  # state stays in the data dir
