"""Throughput against p99 for every server of one `bench/peers/run.py` result.

One panel per payload mix; each server's capacity-search steps as a line (achieved req/s,
p99 ms on a log axis), passing steps filled, failing ones hollow, and the mix's p99 budget.

    python bench/peers/plot.py build/peers/results.json --out docs/peers.svg
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt


def steps_by_mix(results: dict[str, dict[str, object]]) -> dict[str, dict[str, list[dict[str, object]]]]:
    """{mix: {server: steps sorted by achieved rate}} for the servers that ran."""
    out: dict[str, dict[str, list[dict[str, object]]]] = {}
    for server, figures in results.items():
        for mix, f in figures.items():
            if isinstance(f, dict) and f.get("steps"):
                steps = sorted(f["steps"], key=lambda s: s["achieved_rps"])
                out.setdefault(mix, {})[server] = steps
    return out


def plot(result: dict[str, Any], out: Path) -> None:
    panels = steps_by_mix(result["results"])
    if not panels:
        raise SystemExit("no capacity steps in this result (run bench/peers/run.py first)")
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, (mix, servers) in zip(axes[0], panels.items(), strict=True):
        for server, steps in servers.items():
            x = [s["achieved_rps"] for s in steps]
            y = [s["p99_ms"] for s in steps]
            (line,) = ax.plot(x, y, "-", label=server, linewidth=2 if server == "lunaserve" else 1.2)
            for s in steps:
                ax.plot(
                    s["achieved_rps"], s["p99_ms"], "o", color=line.get_color(),
                    fillstyle="full" if s["passed"] else "none",
                )  # fmt: skip
        budgets = {
            f[mix].get("p99_budget_ms", 100)
            for f in result["results"].values()
            if isinstance(f.get(mix), dict)
        }
        for budget in budgets:
            ax.axhline(budget, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("achieved req/s (open loop, Poisson)")
        ax.set_ylabel("p99 latency, ms")
        ax.set_title(f"{mix} tokens, one pinned CPU")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("result", type=Path, help="bench/peers/run.py's --out JSON")
    parser.add_argument("--out", type=Path, default=Path("docs/peers.svg"))
    args = parser.parse_args()
    try:
        result = json.loads(args.result.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(f"{args.result}: {exc}")
    plot(result, args.out)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
