"""bench/peers: the ratios to lunaserve and the throughput-vs-p99 plot drawn from one result."""

from __future__ import annotations

from pathlib import Path

from bench.peers.plot import plot, steps_by_mix
from bench.peers.run import ratios


def _mix(
    capacity: float, p99: float, cpu: float, steps: list[tuple[float, float, bool]]
) -> dict[str, object]:
    return {
        "capacity_rps_within_budget": capacity, "moderate_p99_ms": p99, "cpu_s_per_1000": cpu,
        "steps": [{"offered_rps": r, "achieved_rps": r, "p50_ms": p / 2, "p99_ms": p, "passed": ok}
                  for r, p, ok in steps],
    }  # fmt: skip


RESULTS: dict[str, dict[str, object]] = {
    "lunaserve": {"64-256": _mix(20.0, 50.0, 40.0, [(22, 300, False), (10, 60, True)]), "peak_rss_mb": 300.0},
    "litserve": {"64-256": _mix(16.0, 70.0, 48.0, [(10, 80, True)]), "peak_rss_mb": 600.0},
    "pipeline": {"64-256": _mix(0.0, 900.0, 200.0, [(4, 900, False)]), "peak_rss_mb": 900.0},
    "infinity": {"why_not": "cannot serve a two-label pair classifier"},
    "rayserve": {"error": "exited"},
}


def test_ratios_put_lunaserve_over_each_peer_and_each_peer_cost_over_lunaserve() -> None:
    table = ratios(RESULTS)
    assert set(table) == {"lunaserve", "litserve", "pipeline"}  # no row for a peer that did not run
    assert table["litserve"] == {
        "peer_rss_over_lunaserve": 2.0,
        "64-256": {
            "lunaserve_capacity_over_peer": 1.25,
            "peer_moderate_p99_over_lunaserve": 1.4,
            "peer_cpu_over_lunaserve": 1.2,
        },
    }
    # a peer that passed no step has no capacity: no ratio rather than a division by zero
    assert table["pipeline"]["64-256"]["lunaserve_capacity_over_peer"] is None  # type: ignore[index]


def test_plot_draws_every_server_that_ran_from_its_steps(tmp_path: Path) -> None:
    panels = steps_by_mix(RESULTS)
    assert list(panels) == ["64-256"]
    assert set(panels["64-256"]) == {"lunaserve", "litserve", "pipeline"}
    assert [s["achieved_rps"] for s in panels["64-256"]["lunaserve"]] == [10, 22]  # in rate order
    out = tmp_path / "peers.svg"
    plot({"results": RESULTS}, out)
    svg = out.read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and all(name in svg for name in ("lunaserve", "litserve", "pipeline"))
