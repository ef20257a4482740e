"""Quality of the served model: the test set scored through the live HTTP API, compared with the
figures recorded in the artifact's manifest.

The figures are computed by `models.evaluate` (the same functions the offline evaluation uses),
so a difference between the two is drift: a different artifact, a server-side change in how
items are encoded, or a test set unlike the one the manifest was measured on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests

from loadtest.checks import Check
from loadtest.requirements import Quality
from models.evaluate import baseline_figures, calibration_error, decision_figures, ranking_figures
from service.runtime.spec import MetricSpec

COMPARED = ("roc_auc", "macro_f1", "accuracy")
BATCH_ITEMS = 16
MAX_RETRIES = 20  # per batch, on 503 (shed) with Retry-After


class ServedMetricError(RuntimeError):
    """The server does not serve the metric, or answers in a way the client cannot use."""


def fetch_metric(url: str, metric: str, timeout_s: float = 10) -> dict[str, Any]:
    """GET /v1/metrics/{metric}: active version, spec, parity and quality figures."""
    try:
        response = requests.get(f"{url}/v1/metrics/{metric}", timeout=timeout_s)
    except requests.RequestException as exc:
        raise ServedMetricError(f"{url}: cannot reach the server: {exc}") from None
    if response.status_code == 404:
        raise ServedMetricError(f"{url} does not serve a metric named {metric!r}")
    if response.status_code != 200:
        raise ServedMetricError(
            f"{url}/v1/metrics/{metric}: HTTP {response.status_code}: {response.text[:300]}"
        )
    detail: dict[str, Any] = response.json()
    if not detail.get("active_version") or not detail.get("spec"):
        raise ServedMetricError(f"{url}: metric {metric!r} has no active version")
    return detail


def _post(session: requests.Session, url: str, body: dict[str, Any], timeout_s: float) -> requests.Response:
    for _ in range(MAX_RETRIES):
        response = session.post(url, json=body, timeout=timeout_s)
        if response.status_code != 503:
            return response
        time.sleep(min(float(response.headers.get("Retry-After", "1")), 5.0))  # server asked to wait
    return response


def score_rows(
    url: str, metric: str, rows: Sequence[Mapping[str, str]], spec: MetricSpec, timeout_s: float = 60
) -> list[dict[str, Any] | None]:
    """One result per row (None where the server refused the item), in row order."""
    fields = [f.value for f in spec.fields]
    items = [{f: row[f] for f in fields if row.get(f, "").strip()} for row in rows]
    endpoint = f"{url}/v1/metrics/{metric}/score"
    results: list[dict[str, Any] | None] = []
    with requests.Session() as session:
        for start in range(0, len(items), BATCH_ITEMS):
            batch = items[start : start + BATCH_ITEMS]
            body = {"items": batch, "traffic_class": "observability", "timeout_ms": timeout_s * 1000}
            response = _post(session, endpoint, body, timeout_s)
            if response.status_code == 200:
                results.extend(response.json()["results"])
            elif response.status_code == 422:  # some item refused (e.g. too long): score one by one
                for item in batch:
                    one = _post(session, endpoint, {**body, "items": [item]}, timeout_s)
                    results.append(one.json()["results"][0] if one.status_code == 200 else None)
            else:
                raise ServedMetricError(
                    f"scoring rows {start + 2}-{start + len(batch) + 1}: HTTP {response.status_code}:"
                    f" {response.text[:300]}"
                )
    return results


def served_figures(
    rows: Sequence[Mapping[str, str]], results: Sequence[Mapping[str, Any] | None], spec: MetricSpec
) -> dict[str, Any]:
    kept = [(row, r) for row, r in zip(rows, results, strict=True) if r is not None]
    if not kept:
        raise ServedMetricError("the server refused every row of the test set")
    truth = np.array([row["label"] == spec.positive_label for row, _ in kept])
    scores = np.array([float(r["score"]) for _, r in kept])
    passed = np.array([bool(r["passed"]) for _, r in kept])
    return {
        "rows": len(kept),
        "refused_rows": len(rows) - len(kept),
        **ranking_figures(truth, scores),
        **decision_figures(truth, passed, spec),
        "ece": calibration_error(truth.astype(float), scores),
        "baselines": baseline_figures(truth, [row for row, _ in kept], None),
    }


def pick_reference(
    quality: Mapping[str, Any], test_set: Path, wanted: str | None
) -> tuple[str | None, Mapping[str, Any] | None, str]:
    """The manifest record to compare with, and why it was chosen (or why none was)."""
    if wanted:
        if wanted in quality:
            return wanted, quality[wanted], "named in the requirements"
        return (
            None,
            None,
            f"the manifest has no quality record {wanted!r} (it has {sorted(quality) or 'none'})",
        )
    for name, figures in quality.items():
        recorded = str(figures.get("test_set", "")) if isinstance(figures, Mapping) else ""
        if recorded and Path(recorded).name == test_set.name:
            return name, figures, f"recorded on a file named {test_set.name}"
    if len(quality) == 1:
        name = next(iter(quality))
        return name, quality[name], "the manifest's only quality record"
    if not quality:
        return None, None, "the manifest records no quality figures"
    return (
        None,
        None,
        f"several records ({sorted(quality)}) and none on {test_set.name}: set quality.reference",
    )


def drift_rows(served: Mapping[str, Any], reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in COMPARED:
        a, b = reference.get(name), served.get(name)
        if isinstance(a, int | float) and isinstance(b, int | float):
            rows.append(
                {"figure": name, "manifest": float(a), "served": float(b), "delta": float(b) - float(a)}
            )
    return rows


def quality_checks(
    served: Mapping[str, Any], drift: Sequence[Mapping[str, Any]], rules: Quality
) -> list[Check]:
    checks = []
    for row in drift:
        delta = row["delta"]
        note = "drift: above the manifest" if delta > rules.max_drift else ""
        checks.append(
            Check(
                f"quality: {row['figure']} vs manifest",
                f">= {row['manifest']:.3f} - {rules.max_drift:g}",
                f"{row['served']:.3f} ({delta:+.3f})",
                delta >= -rules.max_drift,
                note,
            )
        )
    for name, floor in (("roc_auc", rules.min_roc_auc), ("macro_f1", rules.min_macro_f1)):
        if floor is not None:
            value = served.get(name)
            checks.append(
                Check(
                    f"quality: {name}",
                    f">= {floor:g}",
                    "n/a" if value is None else f"{value:.3f}",
                    value is not None and value >= floor,
                )
            )
    return checks
