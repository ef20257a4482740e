"""PNG plots for the sign-off report: latency over time, latency histograms per stage, and the
capacity search. Each function returns PNG bytes (the HTML report embeds them)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from loadtest.samples import Sample, per_second


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def timeline_png(samples: Sequence[Sample], stages: Sequence[Mapping[str, Any]]) -> bytes:
    """Every request's latency by send time, p50/p99 per second, achieved QPS, stages shaded."""
    plt = _pyplot()
    fig, (lat_ax, qps_ax) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[2, 1])
    if stages:
        t0, t1 = stages[0]["start"], stages[-1]["end"]
        ok = [s for s in samples if s.ok]
        lat_ax.scatter(
            [s.sent_at - t0 for s in ok],
            [s.latency_ms for s in ok],
            s=3,
            alpha=0.25,
            color="tab:blue",
            label="request",
        )
        series = per_second(samples, t0, t1)
        lat_ax.plot(series["t"] + 0.5, series["p50"], color="tab:green", label="p50 per second")
        lat_ax.plot(series["t"] + 0.5, series["p99"], color="tab:red", label="p99 per second")
        qps_ax.step(series["t"], series["qps"], where="post", color="tab:blue", label="achieved QPS")
        for i, stage in enumerate(stages):
            a, b = stage["start"] - t0, stage["end"] - t0
            for ax in (lat_ax, qps_ax):
                ax.axvspan(a, b, color="grey" if i % 2 else "white", alpha=0.12)
            lat_ax.text(
                a + 0.2, 1.0, stage["name"], transform=lat_ax.get_xaxis_transform(), va="top", fontsize=8
            )
            qps_ax.hlines(
                stage["target_qps"], a, b, colors="black", linestyles=":", label="target" if i == 0 else None
            )
            budget = stage.get("budget_ms")
            if budget:
                lat_ax.hlines(
                    budget["p99"],
                    a,
                    b,
                    colors="tab:red",
                    linestyles="--",
                    label="p99 budget" if i == 1 or len(stages) == 1 else None,
                )
        errors = [s for s in samples if not s.ok]
        if errors:
            qps_ax.scatter(
                [s.due_at - t0 for s in errors],
                [0] * len(errors),
                marker="x",
                color="tab:red",
                s=12,
                label="failed / not sent",
            )
    lat_ax.set(ylabel="latency (ms)", title="Latency over time")
    lat_ax.set_yscale("log")
    lat_ax.legend(loc="upper right", fontsize=8)
    qps_ax.set(xlabel="seconds since start", ylabel="QPS")
    qps_ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def histograms_png(samples: Sequence[Sample], stages: Sequence[Mapping[str, Any]]) -> bytes:
    """One latency histogram per stage, with its budget percentiles marked."""
    plt = _pyplot()
    n = max(len(stages), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=False):
        start, end = stage.get("judged_from", stage["start"]), stage["end"]
        lat = np.array([s.latency_ms for s in samples if s.ok and start <= s.due_at < end])
        if lat.size:
            ax.hist(lat, bins=40, color="tab:blue", alpha=0.8)
            for q, style in (("p50", ":"), ("p95", "-."), ("p99", "--")):
                ax.axvline(float(np.percentile(lat, int(q[1:]))), color="black", linestyle=style, label=q)
        budget = stage.get("budget_ms")
        if budget:
            ax.axvline(budget["p99"], color="tab:red", linestyle="--", label="p99 budget")
        ax.set(title=stage["name"], xlabel="latency (ms)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("requests")
    return _png(fig)


def search_png(search: Mapping[str, Any], p99_budget_ms: float) -> bytes:
    """p99 of each search step against its rate; passing steps in green."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p in search.get("probes", []):
        y = p["p99_ms"] if p["p99_ms"] is not None else p99_budget_ms * 2
        ax.scatter(p["qps"], y, color="tab:green" if p["passed"] else "tab:red", zorder=3)
    ax.axhline(p99_budget_ms, color="tab:red", linestyle="--", label="peak p99 budget")
    if search.get("sustainable_qps"):
        ax.axvline(search["sustainable_qps"], color="tab:green", linestyle=":", label="sustainable")
    ax.set(xlabel="offered QPS", ylabel="p99 latency (ms)", title="Capacity search (green: step passed)")
    ax.legend(fontsize=8)
    return _png(fig)
