"""Values that must be refused before anything reaches a cluster.

values.schema.json is enforced by Helm itself (install, upgrade, template and lint all check it);
the cross-field rules a JSON schema cannot express are `fail`s in the templates. A schema
violation is checked three ways (Helm's schema validation, a render, lint); a template rule by a
render.
"""

from __future__ import annotations

import helm_python as helm
import pytest

from conftest import CHART_DIR, KUBE_VERSION, deep_merge, scenario_values

MINIMAL = scenario_values("minimal")


def without(values, dotted):
    """values with the key at the dotted path removed."""
    import copy

    out = copy.deepcopy(values)
    *parents, leaf = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[leaf]
    return out


# (case id, values, a fragment the error must contain)
SCHEMA_VIOLATIONS = [
    ("check-rate-zero", deep_merge(MINIMAL, {"rateBudget": {"checkRate": 0}}), "checkRate"),
    ("check-rate-negative", deep_merge(MINIMAL, {"rateBudget": {"checkRate": -5}}), "checkRate"),
    ("import-rate-zero", deep_merge(MINIMAL, {"rateBudget": {"importRate": 0}}), "importRate"),
    ("import-rate-string", deep_merge(MINIMAL, {"rateBudget": {"importRate": "200/s"}}), "importRate"),
    ("burst-zero", deep_merge(MINIMAL, {"rateBudget": {"importBurst": 0}}), "importBurst"),
    ("window-size-101", deep_merge(MINIMAL, {"worker": {"windowSize": 101}}), "windowSize"),
    ("window-size-0", deep_merge(MINIMAL, {"worker": {"windowSize": 0}}), "windowSize"),
    ("window-size-fraction", deep_merge(MINIMAL, {"worker": {"windowSize": 50.5}}), "windowSize"),
    ("missing-sdkappid", without(MINIMAL, "chat.sdkappid"), "sdkappid"),
    ("sdkappid-string", deep_merge(MINIMAL, {"chat": {"sdkappid": "my-app"}}), "sdkappid"),
    ("sdkappid-zero", deep_merge(MINIMAL, {"chat": {"sdkappid": 0}}), "sdkappid"),
    ("missing-brokers", without(MINIMAL, "kafka.brokers"), "brokers"),
    ("empty-brokers", deep_merge(MINIMAL, {"kafka": {"brokers": ""}}), "brokers"),
    ("missing-secret-key", without(MINIMAL, "secretKey.value"), "secretKey"),
    ("replicas-string", deep_merge(MINIMAL, {"replicaCount": "two"}), "replicaCount"),
    ("drain-timeout-string", deep_merge(MINIMAL, {"worker": {"drainTimeoutSeconds": "30s"}}),
     "drainTimeoutSeconds"),
    ("bad-duration", deep_merge(MINIMAL, {"worker": {"windowLinger": "soon"}}), "windowLinger"),
    ("unknown-region", deep_merge(MINIMAL, {"chat": {"region": "mars"}}), "region"),
    ("bad-topic-name", deep_merge(MINIMAL, {"kafka": {"topics": {"input": "sign ups"}}}), "input"),
    ("typo-top-level", deep_merge(MINIMAL, {"replicas": 2}), "replicas"),
    ("typo-nested", deep_merge(MINIMAL, {"worker": {"windowsize": 10}}), "windowsize"),
    ("managed-kafka-property", deep_merge(MINIMAL, {"kafka": {"properties": {
        "enable.auto.commit": "true"}}}), "enable.auto.commit"),
    ("unknown-group-protocol", deep_merge(MINIMAL, {"kafka": {"groupProtocol": "eager"}}),
     "groupProtocol"),
    ("group-protocol-as-property", deep_merge(MINIMAL, {"kafka": {"properties": {
        "group.protocol": "consumer"}}}), "group.protocol"),
    # Under the consumer protocol (KIP-848) the broker decides these; the worker refuses them too.
    ("classic-property-under-consumer-protocol", deep_merge(MINIMAL, {"kafka": {
        "groupProtocol": "consumer", "properties": {"session.timeout.ms": 45000}}}),
     "session.timeout.ms"),
    ("assignor-under-consumer-protocol", deep_merge(MINIMAL, {"kafka": {
        "groupProtocol": "consumer", "properties": {"partition.assignment.strategy": "range"}}}),
     "partition.assignment.strategy"),
    ("remote-assignor-under-classic-protocol", deep_merge(MINIMAL, {"kafka": {"properties": {
        "group.remote.assignor": "uniform"}}}), "group.remote.assignor"),
    ("kafka-property-with-separator", deep_merge(MINIMAL, {"kafka": {"properties": {
        "client.id": "a;b"}}}), "client.id"),
    ("sasl-without-secret", deep_merge(MINIMAL, {"kafka": {"sasl": {
        "enabled": True, "username": "u"}}}), "existingSecret"),
    ("sasl-without-username", deep_merge(MINIMAL, {"kafka": {"sasl": {
        "enabled": True, "existingSecret": "s"}}}), "username"),
    ("sasl-unknown-mechanism", deep_merge(MINIMAL, {"kafka": {"sasl": {
        "enabled": True, "mechanism": "GSSAPI", "username": "u", "existingSecret": "s"}}}),
     "mechanism"),
    ("two-ca-sources", deep_merge(MINIMAL, {"kafka": {"tls": {
        "enabled": True, "ca": {"secretName": "a", "configMapName": "b"}}}}), "ca"),
    ("admin-port-out-of-range", deep_merge(MINIMAL, {"admin": {"port": 70000}}), "port"),
    ("grace-period-string", deep_merge(MINIMAL, {"terminationGracePeriodSeconds": "60"}),
     "terminationGracePeriodSeconds"),
]


@pytest.mark.parametrize("values,fragment", [c[1:] for c in SCHEMA_VIOLATIONS],
                         ids=[c[0] for c in SCHEMA_VIOLATIONS])
def test_schema_rejects(chart, values, fragment):
    with pytest.raises(helm.HelmValuesError) as schema_error:
        chart.validate_schema(values)
    assert fragment in str(schema_error.value)
    # The same values never render: Helm validates the schema before templating.
    with pytest.raises(helm.HelmError) as render_error:
        chart.render(values, name="rel", namespace="ns")
    assert fragment in str(render_error.value)
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert any(m["severity"] == 3 for m in report["messages"]), report


def test_chart_defaults_alone_are_rejected(chart):
    """No broker, SDKAppID or key is invented: an install must name them."""
    with pytest.raises(helm.HelmValuesError) as e:
        chart.render({}, name="rel", namespace="ns")
    for fragment in ("sdkappid", "brokers", "secretKey"):
        assert fragment in str(e.value)


# Cross-field rules: the schema passes, the templates refuse with a message naming the values.
TEMPLATE_FAILURES = [
    ("hpa-and-keda", {"autoscaling": {"enabled": True}, "keda": {"enabled": True}}, "exclusive"),
    ("service-and-pod-monitor", {"metrics": {"serviceMonitor": {"enabled": True},
                                             "podMonitor": {"enabled": True}}}, "exclusive"),
    ("events-below-window", {"worker": {"windowSize": 100, "maxEventsInFlight": 50}},
     "maxEventsInFlight"),
    ("input-is-outcome", {"kafka": {"topics": {"input": "t", "outcome": "t"}}}, "must differ"),
    ("grace-not-above-drain", {"worker": {"drainTimeoutSeconds": 60},
                               "terminationGracePeriodSeconds": 60},
     "terminationGracePeriodSeconds"),
    ("network-policy-without-brokers", {"networkPolicy": {"enabled": True}}, "networkPolicy.kafka.to"),
    ("hpa-min-above-max", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     "minReplicas"),
    ("hpa-without-target", {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
     "targetCPUUtilizationPercentage"),
    ("keda-sasl-plain-username", {"keda": {"enabled": True}, "kafka": {"sasl": {
        "enabled": True, "username": "u", "existingSecret": "s"}}}, "usernameKey"),
    ("pdb-without-bound", {"podDisruptionBudget": {"enabled": True, "maxUnavailable": None}},
     "minAvailable"),
    ("avro-without-registry", {"worker": {"input": {"format": "avro"}}},
     "worker.input.schemaRegistry.url"),
    ("registry-with-json", {"worker": {"input": {"schemaRegistry": {"url": "https://sr.example"}}}},
     "does not read through a registry"),
    ("registry-secret-without-key", {"worker": {"input": {
        "format": "avro", "schemaRegistry": {"url": "https://sr.example", "existingSecret": "sr"}}}},
     "exactly one of userInfoKey and tokenKey"),
    ("registry-key-without-secret", {"worker": {"input": {
        "format": "avro", "schemaRegistry": {"url": "https://sr.example", "tokenKey": "t"}}}},
     "existingSecret, which is not set"),
    ("network-policy-without-registry-peers", {
        "networkPolicy": {"enabled": True, "kafka": {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}},
        "worker": {"input": {"format": "avro", "schemaRegistry": {"url": "https://sr.example"}}}},
     "networkPolicy.schemaRegistry.to"),
    ("types-without-pointer", {"worker": {"lifecycle": {"deleteTypes": ["gone"]}}},
     "need worker.lifecycle.eventTypePointer"),
    ("type-pointer-with-plain", {"worker": {"input": {"format": "plain"},
                                            "lifecycle": {"eventTypePointer": "/type"}}},
     "needs a structured worker.input.format"),
]


@pytest.mark.parametrize("override,fragment", [c[1:] for c in TEMPLATE_FAILURES],
                         ids=[c[0] for c in TEMPLATE_FAILURES])
def test_templates_refuse(chart, override, fragment):
    values = deep_merge(MINIMAL, override)
    chart.validate_schema(values)  # the schema alone lets these through
    with pytest.raises(helm.HelmRenderError) as e:
        chart.render(values, name="rel", namespace="ns")
    assert fragment in str(e.value)
    # (helm lint deliberately runs templates in "lint mode", where `fail` only logs; install,
    # upgrade and template stop on it, which is what the render above checks.)
