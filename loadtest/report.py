"""The sign-off report: Markdown (with PNGs beside it) and one self-contained HTML file.

Input is the JSON-ready sign-off result (`signoff.json`) and the main run's samples; the writer
computes nothing that decides the verdict, it only shows it: the pass/fail table per requirement,
per-stage figures and plots, the capacity search, headroom, replicas and cost, and quality.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtest.plots import histograms_png, search_png, timeline_png
from loadtest.samples import Sample


def _f(value: Any, fmt: str = ".1f", none: str = "n/a") -> str:
    return none if value is None else format(value, fmt)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _check_rows(checks: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        ["PASS" if c["passed"] else "**FAIL**", c["name"], c["target"], c["measured"], c.get("note", "")]
        for c in checks
    ]


def _stage_rows(stages: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for s in stages:
        f, b = s["figures"], s.get("budget_ms")
        rows.append(
            [
                s["name"],
                _f(s["target_qps"], "g"),
                _f(f["scheduled_qps"], ".2f"),
                _f(f["achieved_qps"], ".2f"),
                _f(f["p50_ms"]),
                _f(f["p95_ms"]),
                _f(f["p99_ms"]),
                f"{b['p50']:g} / {b['p95']:g} / {b['p99']:g}" if b else "not judged",
                f"{f['error_ratio']:.2%}",
                _f(f["lag_p99_ms"], ".0f"),
                _f(f["mean_tokens"], ".0f"),
            ]
        )
    return rows


STAGE_HEADER = [
    "stage",
    "target QPS",
    "scheduled QPS",
    "achieved QPS",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "budget p50/p95/p99 ms",
    "errors",
    "generator lag p99 ms",
    "mean tokens",
]


def render_markdown(result: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """The report as Markdown; `images` maps plot names to the file names written beside it."""
    target, req = result["target"], result["requirements"]
    failed = [c for c in result["checks"] if not c["passed"]]
    verdict = "PASS" if not failed else f"FAIL ({len(failed)} of {len(result['checks'])} requirements failed)"
    lines = [
        f"# Sign-off: {target['metric']} v{target.get('version') or '?'}: {verdict}",
        "",
        f"Requirements `{result['requirements_file']}` ({req['use_case']}); server {target['url']}"
        f"{' (started for this sign-off)' if target.get('started_server') else ''};"
        f" {target.get('placement', '')}.",
        f"Generated {result.get('finished_at', '')}.",
        "",
    ]
    if failed:
        lines += (
            ["Failed requirements:", ""]
            + [f"- **{c['name']}**: {c['measured']} (target {c['target']})" for c in failed]
            + [""]
        )
    lines += [
        "## Requirements",
        "",
        *_table(["verdict", "requirement", "target", "measured", "note"], _check_rows(result["checks"])),
        "",
    ]
    load = result.get("load")
    if load:
        lines += ["## Load stages", "", *_table(STAGE_HEADER, _stage_rows(load["stages"])), ""]
        lines += [
            f"Arrivals: {load.get('arrivals', 'poisson')}, {load.get('users_note', '')}."
            f" Each stage is judged on the requests due after its first {req['stages']['settle_s']:g} s."
            " Locust output:"
            f" `{load['out_dir']}` (CSV, HTML, JSON, samples.csv, gate.json).",
            "",
        ]
        for name in ("timeline", "histograms"):
            if name in images:
                lines += [f"![{name}]({images[name]})", ""]
    payloads = result.get("payloads")
    if payloads:
        rows = [
            [
                level,
                p["source"],
                _f(p["mean_tokens"], ".0f"),
                str(p["min_tokens"]),
                str(p["max_tokens"]),
                str(p["items"]),
            ]
            for level, p in payloads.items()
        ]
        lines += [
            "## Payloads",
            "",
            "Sized with the metric's own tokenizer (pair tokens with specials).",
            "",
            *_table(["level", "source", "mean tokens", "min", "max", "items"], rows),
            "",
        ]
    lines += _capacity_lines(result, images)
    lines += _quality_lines(result.get("quality"))
    notes = result.get("notes") or []
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines) + "\n"


def _capacity_lines(result: Mapping[str, Any], images: Mapping[str, str]) -> list[str]:
    cap = result.get("capacity")
    if not cap:
        return []
    lines = ["## Capacity", ""]
    search = result.get("search")
    rows = [
        ["sustainable QPS per replica (peak budget)", _f(cap["sustainable_qps"], ".1f", "none passed")],
        ["headroom (sustainable / peak)", _f(cap["headroom"], ".2f") + "x" if cap["headroom"] else "n/a"],
        [f"replicas for the peak of {cap['peak_qps']:g} QPS", _f(cap["replicas_for_peak"], "d")],
        [
            "cost per 1,000 evaluations, one replica at capacity",
            "no price given"
            if cap["replica_hourly_usd"] is None
            else f"${_f(cap['usd_per_1000_at_capacity'], '.4f')}",
        ],
        [
            f"cost per 1,000 evaluations at the average {cap['average_qps']:g} QPS (replicas for peak)",
            "no price given"
            if cap["replica_hourly_usd"] is None
            else f"${_f(cap['usd_per_1000_at_average'], '.4f')}",
        ],
    ]
    lines += [*_table(["figure", "value"], rows), ""]
    if search:
        lines += [
            f"Step search stopped by {search['stopped_by']}; first failing rate "
            f"{_f(search['first_failing_qps'], '.1f', 'none')}.",
            "",
        ]
        probe_rows = [
            [
                _f(p["qps"], ".1f"),
                "pass" if p["passed"] else "fail",
                _f(p["achieved_qps"], ".1f"),
                _f(p["p99_ms"]),
                f"{p['error_ratio']:.2%}",
                ", ".join(p["failed"]),
            ]
            for p in search["probes"]
        ]
        lines += _table(
            ["offered QPS", "step", "achieved QPS", "p99 ms", "errors", "failed checks"], probe_rows
        )
        lines += [""]
        if "search" in images:
            lines += [f"![search]({images['search']})", ""]
    return lines


def _quality_lines(quality: Mapping[str, Any] | None) -> list[str]:
    if not quality:
        return ["## Quality", "", "No test set given: quality not checked.", ""]
    lines = [
        "## Quality",
        "",
        f"Test set `{quality['test_set']}`: {quality.get('data_check_summary', '')}",
        "",
    ]
    served = quality.get("served")
    if not served:
        return [*lines, quality.get("skipped", "Not scored."), ""]
    lines += [f"Scored through the HTTP API: {served['rows']} rows ({served['refused_rows']} refused).", ""]
    rows = [
        [
            "served model",
            _f(served.get("roc_auc"), ".3f"),
            _f(served.get("pr_auc"), ".3f"),
            _f(served.get("macro_f1"), ".3f"),
            _f(served.get("accuracy"), ".3f"),
        ]
    ]
    for name, base in served.get("baselines", {}).items():
        rows.append(
            [
                name,
                _f(base.get("roc_auc"), ".3f"),
                _f(base.get("pr_auc"), ".3f"),
                _f(base.get("macro_f1"), ".3f"),
                _f(base.get("accuracy"), ".3f"),
            ]
        )
    lines += _table(["scorer", "ROC-AUC", "PR-AUC", "macro-F1", "accuracy"], rows)
    lines += ["", f"Calibration error (ECE): {_f(served.get('ece'), '.3f')}.", ""]
    ref = quality.get("reference")
    lines += [f"Manifest reference: {ref or 'none'} ({quality.get('reference_reason', '')}).", ""]
    if quality.get("drift"):
        drift = [
            [d["figure"], f"{d['manifest']:.3f}", f"{d['served']:.3f}", f"{d['delta']:+.3f}"]
            for d in quality["drift"]
        ]
        lines += [*_table(["figure", "manifest", "served", "delta"], drift), ""]
    return lines


def _markdown_to_html(markdown: str, images: Mapping[str, bytes], files: Mapping[str, str]) -> str:
    """A small converter for the constructs render_markdown emits (headings, tables, lists, images)."""
    by_file = {v: k for k, v in files.items()}
    out: list[str] = []
    table: list[list[str]] = []

    def inline(text: str) -> str:
        text = html.escape(text)
        while "**" in text:
            text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
        while text.count("`") >= 2:
            text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
        return text

    def flush() -> None:
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            for row in body:
                cls = ' class="fail"' if any("FAIL" in c for c in row[:1]) else ""
                out.append(f"<tr{cls}>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.startswith("!["):
            name = by_file.get(line[line.index("(") + 1 : -1])
            if name is not None and name in images:
                data = base64.b64encode(images[name]).decode()
                out.append(f'<img alt="{name}" src="data:image/png;base64,{data}">')
        elif line:
            out.append(f"<p>{inline(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}tr.fail{background:#fdd}"
        "img{max-width:100%}"
    )
    title = html.escape(markdown.splitlines()[0].lstrip("# "))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
        f"</head><body>{''.join(out)}</body></html>\n"
    )


def write_report(result: Mapping[str, Any], samples: Sequence[Sample], out_dir: Path) -> dict[str, Path]:
    """Write report.md (+ PNGs) and report.html (PNGs embedded); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    load = result.get("load")
    if load and load.get("stages"):
        images["timeline"] = timeline_png(samples, load["stages"])
        images["histograms"] = histograms_png(samples, load["stages"])
    search = result.get("search")
    if search and search.get("probes"):
        images["search"] = search_png(search, result["requirements"]["latency_ms"]["peak"]["p99"])
    files = {name: f"report_{name}.png" for name in images}
    for name, data in images.items():
        (out_dir / files[name]).write_bytes(data)
    markdown = render_markdown(result, files)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["markdown"].write_text(markdown, encoding="utf-8")
    paths["html"].write_text(_markdown_to_html(markdown, images, files), encoding="utf-8")
    return paths
