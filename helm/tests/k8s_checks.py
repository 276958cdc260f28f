"""Validation of rendered manifests.

Built-in kinds: against the Kubernetes OpenAPI schemas of KUBE_VERSION bundled by
kubernetes-validate, strict (unknown fields are errors). CRD kinds (Prometheus Operator, KEDA)
have no bundled schema: the fields their CustomResourceDefinitions require are checked here.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate

KUBE_VERSION = "1.30.0"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                      "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                      "helm.sh/chart")


class ManifestError(AssertionError):
    pass


def validate_all(rendered) -> None:
    """Every manifest of a render: valid, named, labelled, no duplicates."""
    seen = set()
    for source, doc in zip(rendered.sources, rendered.docs):
        kind = doc["kind"]
        meta = doc["metadata"]
        name = meta["name"]
        if not (DNS_LABEL.match(name) and len(name) <= 63):
            raise ManifestError(f"{source}: bad name {name!r}")
        key = (kind, meta.get("namespace"), name)
        if key in seen:
            raise ManifestError(f"{source}: {key} rendered twice")
        seen.add(key)
        missing = [label for label in RECOMMENDED_LABELS if label not in meta.get("labels", {})]
        if missing:
            raise ManifestError(f"{source}: labels missing: {missing}")
        validate_manifest(doc, source)


def validate_manifest(doc: dict[str, Any], source: str = "") -> None:
    checker = CRD_CHECKS.get((doc["apiVersion"], doc["kind"]))
    if checker:
        try:
            checker(doc)
        except (AssertionError, KeyError, TypeError) as e:
            raise ManifestError(f"{source}: {doc['kind']}: {e!r}") from e
        return
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise ManifestError(f"{source}: {doc['kind']} invalid at {path}: {e.message}") from e
    except kubernetes_validate.SchemaNotFoundError as e:
        raise ManifestError(
            f"{source}: no schema and no check for {doc['apiVersion']} {doc['kind']}") from e


# --- CRDs: the fields their CustomResourceDefinitions require ---------------------------


def _string_map(value: Any, what: str) -> None:
    assert isinstance(value, dict), what
    for k, v in value.items():
        assert isinstance(k, str) and isinstance(v, str), f"{what}: {k!r}: {v!r} is not a string"


def _label_selector(selector: Any) -> None:
    assert isinstance(selector, dict) and selector, "selector must not be empty"
    assert set(selector) <= {"matchLabels", "matchExpressions"}
    if "matchLabels" in selector:
        _string_map(selector["matchLabels"], "matchLabels")


def _namespace_selector(spec: dict[str, Any]) -> None:
    ns = spec.get("namespaceSelector")
    if ns is not None:
        assert set(ns) <= {"any", "matchNames"}
        assert all(isinstance(n, str) for n in ns.get("matchNames", []))


def _endpoint(ep: dict[str, Any]) -> None:
    assert isinstance(ep.get("port"), str) and ep["port"], "endpoint needs a named port"
    assert ep.get("path", "/metrics").startswith("/")
    for field in ("interval", "scrapeTimeout"):
        if field in ep:
            assert DURATION.match(ep[field]), f"{field}: {ep[field]!r}"
    for field in ("relabelings", "metricRelabelings"):
        assert isinstance(ep.get(field, []), list)


def check_service_monitor(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    _label_selector(spec["selector"])  # required by the CRD
    _namespace_selector(spec)
    assert spec["endpoints"], "no endpoints"
    for ep in spec["endpoints"]:
        _endpoint(ep)


def check_pod_monitor(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    _label_selector(spec["selector"])  # required by the CRD
    _namespace_selector(spec)
    assert spec["podMetricsEndpoints"], "no podMetricsEndpoints"
    for ep in spec["podMetricsEndpoints"]:
        _endpoint(ep)


def check_prometheus_rule(doc: dict[str, Any]) -> None:
    groups = doc["spec"]["groups"]
    assert groups, "no rule groups"
    group_names = set()
    for group in groups:
        assert isinstance(group["name"], str) and group["name"]  # required
        assert group["name"] not in group_names
        group_names.add(group["name"])
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert isinstance(rule["expr"], (str, int)) and str(rule["expr"]).strip()  # required
            assert ("alert" in rule) != ("record" in rule), f"alert xor record: {rule}"
            if "alert" in rule:
                assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", rule["alert"])
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            for field in ("labels", "annotations"):
                if field in rule:
                    _string_map(rule[field], f"{rule.get('alert')}.{field}")


def check_scaled_object(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"]  # required
    assert target.get("kind", "Deployment") == "Deployment"
    assert spec["triggers"], "no triggers"  # required
    for trigger in spec["triggers"]:
        assert trigger["type"]  # required
        _string_map(trigger["metadata"], "trigger metadata")  # map[string]string
        if "authenticationRef" in trigger:
            assert trigger["authenticationRef"]["name"]
    for field in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        if field in spec:
            assert isinstance(spec[field], int) and spec[field] >= 0, field


def check_trigger_authentication(doc: dict[str, Any]) -> None:
    refs = doc["spec"]["secretTargetRef"]
    assert refs
    for ref in refs:
        assert ref["parameter"] and ref["name"] and ref["key"]  # each required


CRD_CHECKS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): check_trigger_authentication,
}
