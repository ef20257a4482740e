"""deploy/k8s: every overlay renders with `kubectl kustomize`, passes `kubernetes-validate --strict`,
its CRD objects match their published schemas (vendored in tests/fixtures/crd_schemas), and the
rendered objects keep the serving contract (probes, threads, drain, settings that parse)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.config import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("base", "overlays/guardrail", "overlays/observability", "keda")
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
}
PRESTOP_PAUSE_S = 5


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: `make setup` installs it (dev extra)")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([tool("kubectl"), "kustomize", str(K8S / overlay)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def strict(schema: Any) -> Any:
    """A CRD schema as `kubectl --validate=strict` reads it: unknown fields are errors, not pruned."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if isinstance(schema.get("pattern"), str) and schema["pattern"].startswith("^(?i)"):
            schema["pattern"] = "(?i)^" + schema["pattern"][5:]  # Go's RE2 takes flags anywhere, Python first
        open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    check = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(rendered)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    core = [d for d in docs if (d["apiVersion"], d["kind"]) not in SCHEMAS]
    assert check.stdout.count("passed for resource") == len(core), check.stdout
    for doc in docs:
        if (key := (doc["apiVersion"], doc["kind"])) in SCHEMAS:
            schema = json.loads((ROOT / "tests" / "fixtures" / "crd_schemas" / SCHEMAS[key]).read_text())
            jsonschema.validate(doc, strict(schema))


def test_a_typo_in_a_crd_object_fails_its_schema() -> None:
    schema = json.loads(
        (
            ROOT / "tests" / "fixtures" / "crd_schemas" / SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]
        ).read_text()
    )
    (scaled,) = by_kind(render("keda"), "ScaledObject")
    scaled["spec"]["minReplicas"] = 3  # the field is minReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, strict(schema))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_carries_the_rules_file_as_a_prometheusrule(overlay: str) -> None:
    """The operator's PrometheusRule holds exactly deploy/prometheus/rules.yaml's groups (the file
    promtool checks and unit-tests), and the committed object is what the script renders."""
    (rule,) = by_kind(render(overlay), "PrometheusRule")
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == rules["groups"]
    script = ROOT / "scripts" / "render-prometheusrule"
    spec = importlib.util.spec_from_loader(
        "render_prometheusrule", SourceFileLoader("render_prometheusrule", str(script))
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == module.render(), "run scripts/render-prometheusrule after editing the rules"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_deployment_keeps_the_serving_contract(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(overlay)
    (deployment,) = by_kind(docs, "Deployment")
    (config,) = by_kind(docs, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]  # the thread count is right
    threads = next(e for e in container["env"] if e["name"] == "LUNASERVE_INTRA_OP_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    # Every setting parses as the server reads it, and the grace period outlasts pause + drain.
    for key in [k for k in os.environ if k.startswith("LUNASERVE_")]:
        monkeypatch.delenv(key)
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_PAUSE_S + settings.drain_timeout_s
    assert settings.host == "0.0.0.0" and settings.port == 8000
    secrets = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secrets == {"api-keys", "admin-keys"}


def test_profiles_differ_where_they_should() -> None:
    def setting(overlay: str, key: str) -> str | None:
        (config,) = by_kind(render(overlay), "ConfigMap")
        return config["data"].get(key)

    share = "LUNASERVE_ADMISSION__OBSERVABILITY_SHARE"
    assert float(setting("overlays/guardrail", share)) < float(setting("base", share))  # shed first
    wait = "LUNASERVE_BATCHING__MAX_WAIT_MS"
    assert float(setting("overlays/observability", wait)) > float(setting("overlays/guardrail", wait))
    (guard_hpa,) = by_kind(render("overlays/guardrail"), "HorizontalPodAutoscaler")
    (obs_hpa,) = by_kind(render("overlays/observability"), "HorizontalPodAutoscaler")
    target = lambda h: h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]  # noqa: E731
    assert target(guard_hpa) < target(obs_hpa)


def test_keda_scales_the_deployment_on_a_recorded_series() -> None:
    docs = render("keda")
    assert not by_kind(docs, "HorizontalPodAutoscaler")  # KEDA makes its own
    (scaled,) = by_kind(docs, "ScaledObject")
    (deployment,) = by_kind(docs, "Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert set(re.findall(r"lunaserve:[a-z_0-9:]+", query)) <= recorded and "queued_tokens" in query
