"""Render the Helm chart with Helm's own engine (helm-python-sdk wraps Helm's Go SDK) and
validate what it renders against the Kubernetes OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "tickpipe"
FULL_VALUES = CHART_DIR / "ci" / "full-values.yaml"
RELEASE, NAMESPACE = "rel", "markets"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Custom resources: Kubernetes has no schema for them; tests check them by cross-reference.
CUSTOM_API_GROUPS = ("monitoring.coreos.com/", "keda.sh/")


def full_values() -> dict:
    return yaml.safe_load(FULL_VALUES.read_text())


def render(chart, values: dict | None = None) -> list[dict]:
    """Every manifest the chart renders for ``values``, as dicts (NOTES.txt left out)."""
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


def kubernetes_errors(manifests: list[dict]) -> list[str]:
    """Schema violations of the built-in kinds, for every supported Kubernetes version."""
    errors = []
    for manifest in manifests:
        if manifest["apiVersion"].startswith(CUSTOM_API_GROUPS):
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                errors.append(f"{manifest['kind']}/{manifest['metadata']['name']} on {version}: {exc}".splitlines()[0])
    return errors


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str, name: str) -> dict:
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def pod_specs(manifests: list[dict]) -> list[tuple[str, dict]]:
    """(workload name, pod spec) of every Deployment and Job."""
    return [(m["metadata"]["name"], m["spec"]["template"]["spec"])
            for m in manifests if m["kind"] in ("Deployment", "Job")]
