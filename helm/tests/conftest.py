"""Shared helpers for the chart tests.

The chart is rendered, linted and schema-checked by Helm's own Go engine (helm-python-sdk bundles
the Helm v4 SDK as a shared library; no helm binary, no cluster, no network). Rendered manifests
are validated against the Kubernetes OpenAPI schemas bundled by kubernetes-validate.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "account-sync"
CI_DIR = CHART_DIR / "ci"
# The Kubernetes version every manifest is validated against (and lint's kube_version).
from k8s_checks import KUBE_VERSION, validate_all  # noqa: E402
RELEASE = "rel"
NAMESPACE = "sync-ns"

SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


def scenario_values(name: str) -> dict[str, Any]:
    """The values of ci/<name>-values.yaml, parsed by Helm's own YAML reader (as `-f` would)."""
    return helm.values_from_yaml((CI_DIR / f"{name}-values.yaml").read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """base with override merged in (like a second -f file)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


class Rendered:
    """The manifests of one render, parsed, plus NOTES.txt."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.docs: list[dict[str, Any]] = []
        self.sources: list[str] = []
        self.notes = ""
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append(doc)
                    self.sources.append(path)

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {self.kinds()}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1
        return found[0] if found else None

    # Shortcuts into the Deployment.
    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container.get("env", [])}

    @property
    def env_names(self) -> list[str]:
        return [e["name"] for e in self.container.get("env", [])]

    @property
    def config(self) -> dict[str, str]:
        cms = [c for c in self.all("ConfigMap") if "ACCOUNT_SYNC_BROKERS" in c.get("data", {})]
        assert len(cms) == 1
        return cms[0]["data"]


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> Rendered; raises helm.HelmError when Helm refuses.

    Every manifest of every render in the tests is validated (Kubernetes schemas, CRD checks).
    """

    def _render(values: dict[str, Any]) -> Rendered:
        rendered = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
        validate_all(rendered)
        return rendered

    return _render


@pytest.fixture(scope="session")
def minimal():
    return scenario_values("minimal")
