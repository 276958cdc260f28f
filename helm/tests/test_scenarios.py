"""Every ci/*-values.yaml scenario: lint clean, and every rendered manifest valid.

Built-in kinds are validated against the Kubernetes OpenAPI schemas of KUBE_VERSION (strict:
unknown fields are errors). The CRD kinds (Prometheus Operator, KEDA) have no bundled schema;
k8s_checks.py checks the fields their CRDs require.
"""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest

from conftest import CHART_DIR, KUBE_VERSION, SCENARIOS, Rendered, scenario_values
from k8s_checks import (
    check_pod_monitor,
    check_prometheus_rule,
    check_scaled_object,
    check_service_monitor,
    check_trigger_authentication,
    validate_all,
)

EXPECTED_SCENARIOS = {"minimal", "everything", "existing-secret", "sasl"}


def test_every_scenario_is_present():
    assert EXPECTED_SCENARIOS <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_clean(scenario):
    report = helm.lint(
        CHART_DIR, scenario_values(scenario), strict=True, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_schema_accepts(chart, scenario):
    chart.validate_schema(scenario_values(scenario))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_are_valid(scenario, chart):
    """Every manifest of the scenario. (The render fixture of the other tests validates every
    manifest it renders too.)"""
    rendered = Rendered(chart.render(scenario_values(scenario), name="rel", namespace="ns"))
    assert rendered.docs, "nothing rendered"
    validate_all(rendered)


def test_kubernetes_validation_is_strict():
    """An unknown field in a built-in kind is an error (a typo would not be silently dropped)."""
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {},
           "dataa": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_crd_checks_catch_mistakes():
    """The hand-written CRD checks are not vacuous."""
    bad = [
        (check_service_monitor, {"spec": {"endpoints": [{"port": "admin"}]}}),
        (check_pod_monitor, {"spec": {"selector": {"matchLabels": {"a": "b"}}}}),
        (check_prometheus_rule, {"spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}}),
        (check_scaled_object, {"spec": {"scaleTargetRef": {"name": "x"},
                                        "triggers": [{"type": "kafka",
                                                      "metadata": {"lagThreshold": 5}}]}}),
        (check_trigger_authentication, {"spec": {"secretTargetRef": [{"parameter": "p"}]}}),
    ]
    for check, doc in bad:
        with pytest.raises((AssertionError, KeyError)):
            check(doc)
