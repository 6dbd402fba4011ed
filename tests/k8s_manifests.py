"""The Kubernetes manifests under deploy/kubernetes, rendered and read: kustomize, the rendered
documents, and what the launcher declares (the one place the tests import the package for them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("download", "offline", "gpu")
COMPONENTS = ("gpu", "monitoring", "offline", "offline-rerank", "queue-autoscaling", "rerank")

Doc = dict[str, Any]

# The launcher's defaults for the variables the rules read, when the ConfigMap leaves them out.
DEFAULTS = {"EMBED_PORT": "8000", "RERANK_PORT": "8001", "EMBED_STOP_TIMEOUT": "8",
            "EMBED_READY_TIMEOUT": "600", "EMBED_DATA_DIR": "/var/lib/embeddings",
            "EMBED_ENABLED": "true", "RERANK_ENABLED": "false", "EMBED_LOCAL_ONLY": "false",
            "EMBED_MODEL": "BAAI/bge-small-en-v1.5", "RERANK_MODEL": "BAAI/bge-reranker-v2-m3",
            "EMBED_METRICS_AUTH": "false"}
TRUE = {"true", "1", "yes", "on"}


# -- the launcher's declarations: the one place this module imports the package ----------------

def declared_variables() -> frozenset[str]:
    """Every variable name the launcher declares (README's table, embed.env.example)."""
    from embed_launcher.config.variables import VARIABLES

    return frozenset(v.name for v in VARIABLES)


def manage_actions() -> frozenset[str]:
    """The actions `embed_manage` accepts, as flags (e.g. "--status")."""
    from embed_launcher.manage.command import ACTIONS

    return frozenset(f"--{a}" for a in ACTIONS)


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def tei_version() -> str:
    """The TEI release docker/Dockerfile builds on by default (ARG TEI_TAG=cpu-X.Y.Z)."""
    match = re.search(r"^ARG TEI_TAG=cpu-(\S+)$", (ROOT / "docker" / "Dockerfile").read_text(), re.M)
    assert match, "docker/Dockerfile has no ARG TEI_TAG=cpu-<version>"
    return match.group(1)


# -- rendering --------------------------------------------------------------------------------

def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(target: Path) -> list[Doc]:
    """`kubectl kustomize <target>` parsed; no cluster is contacted (an empty kubeconfig)."""
    binary = kubectl()
    assert binary, "kubectl is not installed"
    env = dict(os.environ, KUBECONFIG=os.devnull)
    proc = subprocess.run([binary, "kustomize", str(target)], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def variant_dir(overlay: str, components: tuple[str, ...], scratch: Path) -> Path:
    """An overlay as shipped, or a scratch kustomization adding components to it."""
    if not components:
        return KUSTOMIZE_DIR / "overlays" / overlay
    scratch.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(KUSTOMIZE_DIR, scratch)  # kustomize refuses absolute paths
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [f"{rel}/overlays/{overlay}"],
            "components": [f"{rel}/components/{c}" for c in components]}
    (scratch / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return scratch


# -- reading rendered documents ---------------------------------------------------------------

def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, pod spec) for every Deployment and Job."""
    for d in docs:
        if d.get("kind") in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]


def containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def server(docs: list[Doc]) -> tuple[Doc, Doc, Doc]:
    """(Deployment, pod spec, launcher container) of the server."""
    (deployment,) = of_kind(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    return deployment, spec, spec["containers"][0]


def settings(docs: list[Doc]) -> dict[str, str]:
    """What the server's container is given: its ConfigMaps (envFrom), then literal env values."""
    _, _, container = server(docs)
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(maps.get(source["configMapRef"]["name"], {}))
    values.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return values


def config(docs: list[Doc]) -> dict[str, str]:
    """The server's settings over the launcher's defaults."""
    return DEFAULTS | settings(docs)


def enabled_ports(cfg: dict[str, str]) -> set[int]:
    ports = set()
    if cfg["EMBED_ENABLED"].lower() in TRUE:
        ports.add(int(cfg["EMBED_PORT"]))
    if cfg["RERANK_ENABLED"].lower() in TRUE:
        rerank_default = "8001" if cfg["EMBED_ENABLED"].lower() in TRUE else "8000"
        ports.add(int(cfg.get("RERANK_PORT") or rerank_default))
    return ports


def enabled_models(cfg: dict[str, str]) -> list[str]:
    return [cfg[p + "_MODEL"] for p in ("EMBED", "RERANK") if cfg[p + "_ENABLED"].lower() in TRUE]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def seconds(hook: Doc | None) -> float | None:
    """How long a preStop hook pauses: `sleep` action, or exec of sleep N."""
    if not hook:
        return None
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    if len(command) == 2 and os.path.basename(command[0]) == "sleep":
        return float(command[1])
    return None
