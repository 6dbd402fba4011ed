"""Our own rules for the Kubernetes manifests, as pure checks.

Each check takes the documents one variant renders to (k8s_manifests) and returns a list of
problems (empty = the rule holds), so the tests can show that every rule passes on what we ship
and fails on a broken copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from k8s_manifests import (
    TRUE,
    Doc,
    config,
    containers,
    declared_variables,
    enabled_models,
    enabled_ports,
    manage_actions,
    name,
    of_kind,
    pod_specs,
    project_version,
    seconds,
    selects,
    server,
    tei_version,
)

Check = Callable[[list[Doc]], list[str]]
SECRET_NAMES = frozenset({"EMBED_API_KEY", "RERANK_API_KEY", "EMBED_HF_TOKEN"})
IMAGE_USER = 10001  # the image's `embed` user (docker/Dockerfile)
DOWNLOAD_BUDGET_S = 600  # startup-probe time we require on top of EMBED_READY_TIMEOUT when pods download


# -- the rules --------------------------------------------------------------------------------

# <launcher version>-<TEI_TAG>, e.g. 0.1.0-cpu-1.9.3, 0.1.0-cuda-1.9.3, 0.1.0-1.9.3 (TEI's A100 tag).
IMAGE_TAG = re.compile(r"^(?P<version>\d+\.\d+\.\d+)-(?:(?P<tei>[a-z0-9-]+?)-)?(?P<tei_version>\d+\.\d+\.\d+)$")


def check_images(docs: list[Doc]) -> list[str]:
    """Pinned images: <launcher version>-<TEI_TAG>, the CUDA flavour exactly where a GPU is asked for."""
    problems = []
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            image = c["image"]
            if "@sha256:" in image:
                continue
            repo, _, tag = image.rpartition(":")
            match = IMAGE_TAG.match(tag) if repo and "/" not in tag else None
            if not match:
                problems.append(f"{name(workload)} {c['name']}: image {image} is not pinned to "
                                "<version>-<TEI_TAG> (never latest, never untagged)")
                continue
            if match["version"] != project_version() or match["tei_version"] != tei_version():
                problems.append(f"{name(workload)} {c['name']}: image tag {tag} does not match "
                                f"{project_version()} and TEI {tei_version()}")
            gpu = "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            cuda = not (match["tei"] or "").startswith("cpu")
            if workload["kind"] == "Deployment" and gpu != cuda:
                problems.append(f"{name(workload)} {c['name']}: image {tag} does not fit "
                                f"{'a GPU' if gpu else 'a CPU-only'} pod")
    # The pull Job must fetch the weight format the server will load: the same image.
    images = {c["image"] for _, spec in pod_specs(docs) for c in containers(spec)}
    if len(images) > 1:
        problems.append(f"workloads use different images: {sorted(images)}")
    return problems


def check_security(docs: list[Doc]) -> list[str]:
    """Non-root as the image's user, no privilege, no capabilities, seccomp, read-only root."""
    problems = []
    for workload, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        where = name(workload)
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks must be false (<SERVICE>_PORT variables "
                            "could set EMBED_PORT/RERANK_PORT)")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        for c in containers(spec):
            sc = {**pod, **c.get("securityContext", {})}
            who = f"{where} {c['name']}"
            if sc.get("runAsNonRoot") is not True:
                problems.append(f"{who}: runAsNonRoot must be true")
            if sc.get("runAsUser") != IMAGE_USER or sc.get("runAsGroup") != IMAGE_USER:
                problems.append(f"{who}: must run as uid/gid {IMAGE_USER} (the image's embed user)")
            if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                problems.append(f"{who}: allowPrivilegeEscalation must be false")
            if c.get("securityContext", {}).get("privileged"):
                problems.append(f"{who}: must not be privileged")
            caps = c.get("securityContext", {}).get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{who}: capabilities must drop ALL and add none")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{who}: seccompProfile must be RuntimeDefault")
            if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                problems.append(f"{who}: readOnlyRootFilesystem must be true")
        if (pod.get("runAsNonRoot"), pod.get("runAsUser"), pod.get("seccompProfile", {}).get("type")) != (
                True, IMAGE_USER, "RuntimeDefault"):
            problems.append(f"{where}: the pod's securityContext must set runAsNonRoot, runAsUser "
                            f"{IMAGE_USER} and seccomp RuntimeDefault (for every container, sidecars too)")
        if pod.get("fsGroup") != IMAGE_USER:
            problems.append(f"{where}: fsGroup must be {IMAGE_USER} so volumes are writable by the embed user")
    return problems


def _mounts(spec: Doc, container: Doc) -> dict[str, tuple[Doc, Doc]]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {m["mountPath"].rstrip("/"): (m, volumes.get(m["name"], {})) for m in container.get("volumeMounts", [])}


def check_writable_paths(docs: list[Doc]) -> list[str]:
    """A read-only root needs writable volumes at /tmp and the data directory; models read-only offline."""
    problems = []
    cfg = config(docs)
    data_dir = cfg["EMBED_DATA_DIR"].rstrip("/")
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            mounts = _mounts(spec, c)
            for path in ("/tmp", data_dir):
                mount, volume = mounts.get(path, ({}, {}))
                if not mount or mount.get("readOnly") or mount.get("subPath"):
                    problems.append(f"{name(workload)} {c['name']}: needs a writable volume at {path}")
                elif not ({"emptyDir", "persistentVolumeClaim"} & set(volume)):
                    problems.append(f"{name(workload)} {c['name']}: {path} must be an emptyDir or a claim")
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            paths = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", [])]
            problems += [f"{name(workload)} {c['name']}: {inner} is mounted before {outer}, which would hide it"
                         for i, inner in enumerate(paths) for outer in paths[i + 1:]
                         if inner.startswith(outer + "/")]
    _, spec, container = server(docs)
    mounts = _mounts(spec, container)
    if cfg["EMBED_LOCAL_ONLY"].lower() in TRUE:
        for path, (mount, volume) in mounts.items():
            claim = volume.get("persistentVolumeClaim")
            if claim and not (mount.get("readOnly") and claim.get("readOnly")):
                problems.append(f"server: the shared model volume at {path} must be mounted read-only")
        if "persistentVolumeClaim" not in mounts.get(data_dir, ({}, {}))[1]:
            for model in enabled_models(cfg):
                folder = "models--" + model.replace("/", "--")
                mount, volume = mounts.get(f"{data_dir}/{folder}", ({}, {}))
                if mount.get("subPath") != folder or "persistentVolumeClaim" not in volume:
                    problems.append(f"server: local-only, but {model} is not mounted from the model "
                                    f"claim at {data_dir}/{folder} (subPath {folder})")
    return problems


def _exec(probe: Doc | None) -> list[str]:
    return list((probe or {}).get("exec", {}).get("command", []))


def check_probes(docs: list[Doc]) -> list[str]:
    """Probes ask the launcher; liveness never asks TEI; the start budget covers loads and downloads."""
    _, _, c = server(docs)
    cfg = config(docs)
    problems = []
    want = {"startupProbe": ["embed_manage", "--status"], "readinessProbe": ["embed_manage", "--status"],
            "livenessProbe": ["embed_manage", "--alive"]}
    ports = {p["containerPort"] for p in c.get("ports", [])} | {p.get("name") for p in c.get("ports", [])}
    for kind, command in want.items():
        probe = c.get(kind)
        if not probe:
            problems.append(f"server: no {kind}")
            continue
        if _exec(probe) != command:
            problems.append(f"server: {kind} must run {' '.join(command)}; got {probe}")
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe and probe[handler].get("port") not in ports:
                problems.append(f"server: {kind} probes port {probe[handler].get('port')}, not a container port")
        if probe.get("timeoutSeconds", 1) < 5:
            problems.append(f"server: {kind} timeoutSeconds must be at least 5 (a Python exec on a busy node)")
    liveness = c.get("livenessProbe") or {}
    if "/health" in str(liveness.get("httpGet", {}).get("path", "")):
        problems.append("server: liveness on TEI's /health kills busy pods")
    startup = c.get("startupProbe") or {}
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    need = float(cfg["EMBED_READY_TIMEOUT"].rstrip("s"))
    if cfg["EMBED_LOCAL_ONLY"].lower() not in TRUE:
        need += DOWNLOAD_BUDGET_S
    if budget <= need:
        problems.append(f"server: startup budget {budget} s must exceed {need:g} s "
                        "(EMBED_READY_TIMEOUT, plus a download unless local-only)")
    return problems


def check_probe_commands_exist(docs: list[Doc]) -> list[str]:
    """Every embed_manage flag a probe runs is one embed_manage accepts (else the probe always fails)."""
    known = manage_actions()
    _, _, c = server(docs)
    used = {arg for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            for arg in _exec(c.get(kind))[1:2]}
    return [f"server: embed_manage has no {flag}" for flag in sorted(used - known)]


def check_ports(docs: list[Doc]) -> list[str]:
    """Container ports = the enabled services' ports; the Service and NetworkPolicy use exactly those."""
    problems = []
    cfg = config(docs)
    deployment, _, c = server(docs)
    want = enabled_ports(cfg)
    by_name = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    have = {p["containerPort"] for p in c.get("ports", [])}
    if have != want:
        problems.append(f"server: container ports {sorted(have)} != the enabled services' ports {sorted(want)}")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [s for s in of_kind(docs, "Service") if selects({"matchLabels": s["spec"]["selector"]}, labels)]
    if not services:
        problems.append("no Service selects the server pods")
    for s in services:
        targets = {by_name.get(p.get("targetPort"), p.get("targetPort", p["port"])) for p in s["spec"]["ports"]}
        if targets != want:
            problems.append(f"{name(s)}: target ports {sorted(map(str, targets))} != {sorted(want)}")
    policies = [p for p in of_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]
    for p in policies:
        allowed = {by_name.get(port.get("port"), port.get("port"))
                   for rule in p["spec"].get("ingress", []) for port in rule.get("ports", [])}
        if allowed != want or any(not rule.get("ports") for rule in p["spec"].get("ingress", [])):
            problems.append(f"{name(p)}: ingress ports {sorted(map(str, allowed))} != {sorted(want)}")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    scrape = annotations.get("prometheus.io/port")
    if scrape is not None and int(scrape) not in want:
        problems.append(f"server: prometheus.io/port {scrape} is not a service port (where /metrics is)")
    return problems


def check_env_names(docs: list[Doc]) -> list[str]:
    """Every variable we set, in ConfigMaps or env, is one the launcher declares."""
    known = declared_variables()
    problems = [f"{name(m)}: {key} is not a launcher variable"
                for m in of_kind(docs, "ConfigMap") for key in m.get("data", {}) if key not in known]
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            problems += [f"{name(workload)} {c['name']}: env {e['name']} is not a launcher variable"
                         for e in c.get("env", []) if e["name"] not in known]
    return problems


def check_secrets(docs: list[Doc]) -> list[str]:
    """Keys and tokens only from Secrets; no Secret with data shipped; the server requires the key."""
    problems = [f"{name(m)}: {key} is a secret and must come from a Secret"
                for m in of_kind(docs, "ConfigMap") for key in m.get("data", {}) if key in SECRET_NAMES]
    problems += [f"{name(s)}: a Secret with data is shipped; create it with kubectl instead"
                 for s in of_kind(docs, "Secret") if s.get("data") or s.get("stringData")]
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            for e in c.get("env", []):
                if e["name"] in SECRET_NAMES and "secretKeyRef" not in e.get("valueFrom", {}):
                    problems.append(f"{name(workload)} {c['name']}: {e['name']} must come from a secretKeyRef")
    _, _, c = server(docs)
    key = next((e for e in c.get("env", []) if e["name"] == "EMBED_API_KEY"), None)
    ref = (key or {}).get("valueFrom", {}).get("secretKeyRef", {})
    if not ref or ref.get("optional"):
        problems.append("server: EMBED_API_KEY must come from a (required) Secret: a key generated per "
                        "data directory differs between replicas")
    return problems


def check_graceful_stop(docs: list[Doc]) -> list[str]:
    """terminationGracePeriodSeconds > preStop pause + EMBED_STOP_TIMEOUT: the launcher stops TEI itself."""
    _, spec, c = server(docs)
    pause = seconds(c.get("lifecycle", {}).get("preStop"))
    if pause is None:
        return ["server: needs a preStop pause (sleep) so endpoints drop the pod before it stops"]
    stop = float(config(docs)["EMBED_STOP_TIMEOUT"].rstrip("s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if not grace > pause + stop:
        return [f"server: terminationGracePeriodSeconds {grace} must exceed preStop {pause:g} s + "
                f"EMBED_STOP_TIMEOUT {stop:g} s"]
    return []


def check_resources(docs: list[Doc]) -> list[str]:
    """Requests for CPU and memory, a memory limit; a GPU pod asks for one and tolerates GPU nodes."""
    problems = []
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            res = c.get("resources", {})
            missing = [f"requests.{r}" for r in ("cpu", "memory") if r not in res.get("requests", {})]
            missing += ["limits.memory"] if "memory" not in res.get("limits", {}) else []
            if missing:
                problems.append(f"{name(workload)} {c['name']}: resources missing {', '.join(missing)}")
            if "nvidia.com/gpu" in res.get("limits", {}) and not any(
                    t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
                problems.append(f"{name(workload)}: asks for a GPU but does not tolerate nvidia.com/gpu nodes")
    return problems


def check_availability(docs: list[Doc]) -> list[str]:
    """A PodDisruptionBudget, an autoscaler, a NetworkPolicy and a spread across nodes for the server."""
    deployment, spec, _ = server(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    problems = []
    if not any(selects(p["spec"]["selector"], labels) for p in of_kind(docs, "PodDisruptionBudget")):
        problems.append("no PodDisruptionBudget selects the server pods")
    hpas = [h for h in of_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                               "name": deployment["metadata"]["name"]}]
    if len(hpas) != 1:
        problems.append(f"exactly one HorizontalPodAutoscaler must scale the server; found {len(hpas)}")
    if "replicas" in deployment["spec"] and hpas:
        problems.append("the Deployment sets replicas although an autoscaler owns the count")
    spread = [t for t in spec.get("topologySpreadConstraints", [])
              if t["topologyKey"] == "kubernetes.io/hostname" and selects(t["labelSelector"], labels)]
    if not spread:
        problems.append("server: no topology spread across nodes (kubernetes.io/hostname)")
    for workload, _ in pod_specs(docs):
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        policies = [p for p in of_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], pod_labels)]
        if not any(set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} for p in policies):
            problems.append(f"{name(workload)}: no NetworkPolicy governs both its ingress and egress")
    return problems


def _egress_ports(policy: Doc) -> set[int]:
    return {port.get("port") for rule in policy["spec"].get("egress", []) for port in rule.get("ports", [])}


def check_egress(docs: list[Doc]) -> list[str]:
    """Downloading pods reach only DNS and HTTPS; local-only servers reach nothing."""
    deployment, _, _ = server(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    local_only = config(docs)["EMBED_LOCAL_ONLY"].lower() in TRUE
    problems = []
    for p in of_kind(docs, "NetworkPolicy"):
        egress = p["spec"].get("egress", [])
        if any(not rule.get("ports") for rule in egress):
            problems.append(f"{name(p)}: an egress rule without ports allows everything")
        if not _egress_ports(p) <= {53, 443}:
            problems.append(f"{name(p)}: egress beyond DNS and HTTPS: {sorted(_egress_ports(p))}")
        if selects(p["spec"]["podSelector"], labels):
            if local_only and egress:
                problems.append(f"{name(p)}: local-only servers need no egress at all")
            if not local_only and _egress_ports(p) != {53, 443}:
                problems.append(f"{name(p)}: downloading servers need DNS and HTTPS (Hub)")
    return problems


def check_monitors(docs: list[Doc]) -> list[str]:
    """A PodMonitor scrapes the server pods' gateway once, at /metrics, with a key when one is required."""
    deployment, _, c = server(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    cfg = config(docs)
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    problems = []
    for m in of_kind(docs, "PodMonitor"):
        spec = m["spec"]
        if not selects(spec.get("selector", {}), labels):
            problems.append(f"{name(m)}: its selector does not match the server pods' labels {labels}")
        if spec.get("namespaceSelector"):
            problems.append(f"{name(m)}: a namespaceSelector would scrape other namespaces' pods")
        endpoints = spec.get("podMetricsEndpoints", [])
        # Every listener of the gateway answers the same aggregated /metrics: two endpoints would
        # count every series twice.
        if len(endpoints) != 1:
            problems.append(f"{name(m)}: {len(endpoints)} endpoints; scrape exactly one port (the gateway's "
                            "/metrics is the same on every port)")
        for e in endpoints:
            port = e.get("port")
            if port not in ports:
                problems.append(f"{name(m)}: port {port!r} is not a named port of the server container "
                                f"({', '.join(sorted(ports))})")
            elif ports[port] not in enabled_ports(cfg):
                problems.append(f"{name(m)}: port {port} ({ports[port]}) is not an enabled service's port")
            if e.get("path", "/metrics") != "/metrics":
                problems.append(f"{name(m)}: path {e.get('path')} is not /metrics")
            if e.get("scheme", "http") != "http":
                problems.append(f"{name(m)}: scheme {e.get('scheme')}: the gateway speaks plain HTTP")
            credentials = e.get("authorization", {}).get("credentials", {})
            if cfg["EMBED_METRICS_AUTH"].lower() in TRUE and not (credentials.get("name") and credentials.get("key")):
                problems.append(f"{name(m)}: EMBED_METRICS_AUTH is on, so /metrics needs a key: set "
                                "authorization.credentials to a Secret's key with the `metrics` scope")
    return problems


CHECKS: dict[str, Check] = {
    "images": check_images,
    "security": check_security,
    "writable_paths": check_writable_paths,
    "probes": check_probes,
    "ports": check_ports,
    "env_names": check_env_names,
    "secrets": check_secrets,
    "graceful_stop": check_graceful_stop,
    "resources": check_resources,
    "availability": check_availability,
    "egress": check_egress,
    "monitors": check_monitors,
}
