"""Ways to break a rendered manifest, one rule at a time, for the tests that show each rule can fail."""

from __future__ import annotations

import copy
from collections.abc import Callable

import k8s_manifests as km

Mutation = Callable[[list[km.Doc]], None]


def server(docs: list[km.Doc]) -> km.Doc:
    return km.server(docs)[2]


def pod(docs: list[km.Doc]) -> km.Doc:
    return km.server(docs)[1]


def configmap(docs: list[km.Doc]) -> dict[str, str]:
    data: dict[str, str] = km.of_kind(docs, "ConfigMap")[0].setdefault("data", {})
    return data


def drop_kind(kind: str) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        docs[:] = [d for d in docs if d["kind"] != kind]
    return mutate


def set_image(image: str) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        server(docs)["image"] = image
    return mutate


def container_sc(key: str, value: object) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        server(docs)["securityContext"][key] = value
    return mutate


def pod_field(key: str, value: object) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        pod(docs)[key] = value
    return mutate


def probe(kind: str, value: object) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        server(docs)[kind] = value
    return mutate


def config(key: str, value: str) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        configmap(docs)[key] = value
    return mutate


def env(entry: km.Doc) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        server(docs)["env"].append(entry)
    return mutate


def drop_mount(path: str) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        c = server(docs)
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != path]
    return mutate


def mount_model_rw(docs: list[km.Doc]) -> None:
    for m in server(docs)["volumeMounts"]:
        if m["name"] == "models":
            m["readOnly"] = False


def swap_key_for_literal(docs: list[km.Doc]) -> None:
    for e in server(docs)["env"]:
        if e["name"] == "EMBED_API_KEY":
            e.pop("valueFrom")
            e["value"] = "embed-not-a-secret"


def make_key_optional(docs: list[km.Doc]) -> None:
    for e in server(docs)["env"]:
        if e["name"] == "EMBED_API_KEY":
            e["valueFrom"]["secretKeyRef"]["optional"] = True


def ship_secret(docs: list[km.Doc]) -> None:
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "embed-launcher"},
                 "stringData": {"EMBED_API_KEY": "embed-committed"}})


def drop_resource(section: str, resource: str) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        del server(docs)["resources"][section][resource]
    return mutate


def drop_tolerations(docs: list[km.Doc]) -> None:
    pod(docs).pop("tolerations")


def second_hpa(docs: list[km.Doc]) -> None:
    (hpa,) = km.of_kind(docs, "HorizontalPodAutoscaler")
    twin = copy.deepcopy(hpa)
    twin["metadata"]["name"] = "embed-launcher-twin"
    docs.append(twin)


def add_replicas(docs: list[km.Doc]) -> None:
    km.server(docs)[0]["spec"]["replicas"] = 3


def drop_spread(docs: list[km.Doc]) -> None:
    pod(docs)["topologySpreadConstraints"] = [
        t for t in pod(docs)["topologySpreadConstraints"] if t["topologyKey"] != "kubernetes.io/hostname"]


def policy(docs: list[km.Doc], name: str = "embed-launcher") -> km.Doc:
    return next(p for p in km.of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == name)


def ingress_port(port: int) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        policy(docs)["spec"]["ingress"][0]["ports"].append({"port": port, "protocol": "TCP"})
    return mutate


def egress_open(docs: list[km.Doc]) -> None:
    policy(docs)["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})


def egress_port(port: int) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        policy(docs)["spec"]["egress"][-1]["ports"].append({"port": port, "protocol": "TCP"})
    return mutate


def ingress_only(docs: list[km.Doc]) -> None:
    policy(docs)["spec"]["policyTypes"] = ["Ingress"]


def service_target(port: int) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        km.of_kind(docs, "Service")[0]["spec"]["ports"][0]["targetPort"] = port
    return mutate


def container_port(port: int) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        server(docs)["ports"][0]["containerPort"] = port
    return mutate


def grace(value: int) -> Mutation:
    return pod_field("terminationGracePeriodSeconds", value)


def drop_prestop(docs: list[km.Doc]) -> None:
    server(docs).pop("lifecycle")


def offline_egress(docs: list[km.Doc]) -> None:
    policy(docs)["spec"]["egress"] = [{"ports": [{"port": 53, "protocol": "UDP"}]}]


def job_image(docs: list[km.Doc]) -> None:
    (job,) = km.of_kind(docs, "Job")
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/embed-launcher:0.1.0-cuda-1.9.3"


def job_env(entry: km.Doc) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        (job,) = km.of_kind(docs, "Job")
        job["spec"]["template"]["spec"]["containers"][0]["env"].append(entry)
    return mutate


def job_root(docs: list[km.Doc]) -> None:
    (job,) = km.of_kind(docs, "Job")
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0


def nested_mount_first(docs: list[km.Doc]) -> None:
    mounts = server(docs)["volumeMounts"]
    mounts.insert(0, mounts.pop())


def podmonitor(docs: list[km.Doc]) -> km.Doc:
    (monitor,) = km.of_kind(docs, "PodMonitor")
    return monitor


def monitor_endpoint(key: str, value: object) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        podmonitor(docs)["spec"]["podMetricsEndpoints"][0][key] = value
    return mutate


def monitor_selects(labels: dict[str, str]) -> Mutation:
    def mutate(docs: list[km.Doc]) -> None:
        podmonitor(docs)["spec"]["selector"] = {"matchLabels": labels}
    return mutate


def monitor_every_namespace(docs: list[km.Doc]) -> None:
    podmonitor(docs)["spec"]["namespaceSelector"] = {"any": True}


def monitor_both_ports(docs: list[km.Doc]) -> None:
    endpoints = podmonitor(docs)["spec"]["podMetricsEndpoints"]
    endpoints.append(dict(endpoints[0], port="http-rerank"))
