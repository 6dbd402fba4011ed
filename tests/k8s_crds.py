"""Custom resources that kubernetes-validate has no schema for, checked against their CRD's schema.

The Prometheus Operator's PodMonitor (components/monitoring): cloudcoil-models-prometheus-operator
ships pydantic models generated from the operator's CRD (its openAPIV3Schema: types, enums,
patterns such as a duration's), so a document is checked offline. pydantic ignores fields a model
does not know, so the check is made strict here: a field that does not come back out of the model
is reported as unknown, as `kubectl apply --validate=strict` would.
The models are those of the operator release the package is versioned after (0.80.1 on this
project's mirror); the fields the component uses (port, path, scheme, interval, scrapeTimeout,
authorization) are older than that and still in the CRD today.
"""

from __future__ import annotations

from typing import Any

from k8s_manifests import Doc

# apiVersion/kind pairs validated here instead of by kubernetes-validate.
CUSTOM = frozenset({("monitoring.coreos.com/v1", "PodMonitor")})


def is_custom(doc: Doc) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in CUSTOM


def _unknown(given: Any, kept: Any, path: str) -> list[str]:
    """Paths present in `given` that the model dropped."""
    if isinstance(given, dict) and isinstance(kept, dict):
        return [p for k, v in given.items()
                for p in ([f"{path}.{k}".lstrip(".")] if k not in kept else _unknown(v, kept[k], f"{path}.{k}"))]
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept, strict=False)) for p in _unknown(g, k, f"{path}.{i}")]
    return []


def validate(doc: Doc) -> list[str]:
    """Problems of one custom resource against its CRD's schema (strict: unknown fields too)."""
    import pydantic
    from cloudcoil.models.prometheus_operator.v1 import PodMonitor

    models = {("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor}
    model = models[(doc["apiVersion"], doc["kind"])]
    try:
        parsed = model.model_validate(doc)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{path}: unknown field" for path in _unknown(doc, kept, "")]
