"""`lunaserve signoff`: data check, quality through HTTP, the load scenario, the capacity search
and the report, against a server it starts itself (on its own CPUs) or one given by URL.

Every step appends `Check`s; the verdict is that all of them passed. Outputs go under `out_dir`:
`signoff.json` (everything the report shows), `report.md` + PNGs, `report.html`, `server.log`,
`load/` (the scenario's Locust outputs) and `search/step-NN/` (one Locust run per search step).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.capacity import capacity_checks, plan_capacity
from loadtest.checks import Check
from loadtest.payloads import Payload, PayloadBuilder, draw_sizes, summarize
from loadtest.placement import Placement, place
from loadtest.plan import Budget, LoadPlan, PlanStage, per_user_qps
from loadtest.quality import (
    drift_rows,
    fetch_metric,
    pick_reference,
    quality_checks,
    score_rows,
    served_figures,
)
from loadtest.report import write_report
from loadtest.requirements import LatencyBudget, Requirements, load_requirements
from loadtest.runner import LoadRun, run_plan
from loadtest.samples import read_samples
from loadtest.search import Probe, SearchResult, step_search
from loadtest.server import LocalServer
from models.data_check import DataFileError, check_dataset, read_labelled_csv
from service.config import Settings
from service.runtime.artifact import load_artifact
from service.runtime.encoding import PairEncoder
from service.runtime.spec import MetricSpec

# the server's own default (defined once, in Settings), whatever LUNASERVE_* says here
DEFAULT_REPOSITORY: Path = Settings.model_fields["repository"].default
POOL_ITEMS = 200  # distinct items per load level; requests draw from them at random
DISTRIBUTED_DRAIN_S = 4.0  # workers report samples every 3 s: wait for the last report


class SignoffSetupError(ValueError):
    """Something the sign-off needs is missing or inconsistent; the message says what to pass."""


@dataclass
class SignoffOptions:
    requirements: Path
    test_set: Path | None = None
    url: str | None = None
    repository: Path | None = None
    tokenizer: Path | None = None
    out_dir: Path = Path("build/signoff")
    workers: int = 0
    search: bool = True
    server_args: list[str] = field(default_factory=list)


@dataclass
class SignoffOutcome:
    passed: bool
    checks: list[Check]
    paths: dict[str, Path]


def _budget(b: LatencyBudget) -> Budget:
    return Budget(p50=b.p50, p95=b.p95, p99=b.p99)


def _client_timeout_s(req: Requirements) -> float:
    stated = (req.request.timeout_ms or 0) / 1000
    return min(60.0, max(5.0, 3 * req.latency_ms.peak.p99 / 1000, stated + 2))


def build_plan(
    req: Requirements,
    stages: list[PlanStage],
    pools: dict[str, list[Payload]],
    out_dir: Path,
    *,
    workers: int = 0,
) -> LoadPlan:
    judged = [s.budget.p99 for s in stages if s.budget] or [req.latency_ms.peak.p99]
    return LoadPlan(
        metric=req.metric,
        stages=stages,
        pools={k: [p.item for p in v] for k, v in pools.items()},
        pool_tokens={k: [p.tokens for p in v] for k, v in pools.items()},
        per_user_qps=per_user_qps([s.target_qps for s in stages], min(judged)),
        arrivals=req.load.arrivals,
        items_per_request=req.request.items_per_request,
        traffic_class=req.traffic_class,
        timeout_ms=req.request.timeout_ms,
        client_timeout_s=_client_timeout_s(req),
        max_error_ratio=req.max_error_ratio,
        min_achieved_ratio=req.min_achieved_ratio,
        settle_s=req.stages.settle_s,
        drain_s=DISTRIBUTED_DRAIN_S if workers else 1.0,
        seed=req.seed,
        out_dir=str(out_dir),
    )


def scenario_stages(req: Requirements) -> list[PlanStage]:
    """Warm-up (not judged), average, peak, and recovery back at average."""
    st, load, lat = req.stages, req.load, req.latency_ms
    stages = []
    if st.warmup_s > 0:
        stages.append(
            PlanStage(name="warmup", duration_s=st.warmup_s, target_qps=load.average.qps, pool="average")
        )
    stages += [
        PlanStage(
            name="average",
            duration_s=st.average_s,
            target_qps=load.average.qps,
            pool="average",
            budget=_budget(lat.average),
        ),
        PlanStage(
            name="peak", duration_s=st.peak_s, target_qps=load.peak.qps, pool="peak", budget=_budget(lat.peak)
        ),
        PlanStage(
            name="recovery",
            duration_s=st.recovery_s,
            target_qps=load.average.qps,
            pool="average",
            budget=_budget(lat.average),
        ),
    ]
    return stages


def step_stages(req: Requirements, qps: float) -> list[PlanStage]:
    cap = req.capacity
    stages = []
    if cap.warmup_s > 0:
        stages.append(PlanStage(name="step-warmup", duration_s=cap.warmup_s, target_qps=qps, pool="peak"))
    stages.append(
        PlanStage(
            name=f"step@{qps:.1f}",
            duration_s=cap.step_s,
            target_qps=qps,
            pool="peak",
            budget=_budget(req.latency_ms.peak),
        )
    )
    return stages


def probe_of(run: LoadRun, qps: float) -> Probe:
    judged = [s for s in run.verdict["stages"] if s["budget_ms"]]
    fig = judged[-1]["figures"] if judged else {}
    failed = tuple(c["name"].split(": ", 1)[-1] for c in run.verdict["checks"] if not c["passed"])
    return Probe(
        qps=qps,
        passed=run.passed,
        p99_ms=fig.get("p99_ms"),
        achieved_qps=fig.get("achieved_qps", 0.0),
        error_ratio=fig.get("error_ratio", 0.0),
        failed=failed,
        out_dir=str(run.out_dir),
    )


class Signoff:
    """One sign-off run; `say` receives progress lines."""

    def __init__(self, options: SignoffOptions, say: Callable[[str], None] = print) -> None:
        self.o = options
        self.say = say
        self.req = load_requirements(options.requirements)
        self.out = options.out_dir
        self.checks: list[Check] = []
        self.result: dict[str, Any] = {
            "requirements_file": str(options.requirements),
            "requirements": self.req.model_dump(mode="json"),
            "notes": [],
        }

    # -- setup ---------------------------------------------------------------------------------

    def _encoder(self, detail: dict[str, Any], spec: MetricSpec) -> PairEncoder:
        if self.o.tokenizer is not None:
            if not self.o.tokenizer.is_file():
                raise SignoffSetupError(f"--tokenizer {self.o.tokenizer}: no such file")
            self.result["notes"].append(f"Payloads sized with {self.o.tokenizer} (given by --tokenizer).")
            return PairEncoder.from_file(self.o.tokenizer, spec)
        if self.o.repository is None and self.o.url is not None:
            raise SignoffSetupError(
                "sizing payloads needs the metric's own tokenizer: with --url also pass --repository DIR "
                "(the repository the server loads) or --tokenizer FILE"
            )
        repository = self.o.repository or DEFAULT_REPOSITORY
        folder = repository / spec.name / str(detail["active_version"])
        if not folder.is_dir():
            raise SignoffSetupError(
                f"{folder}: not found; the server serves {spec.name} v{detail['active_version']}, so the "
                "repository given must hold that version (its tokenizer sizes the payloads)"
            )
        artifact = load_artifact(folder)  # the tokenizer is the one the manifest vouches for
        return PairEncoder.from_file(artifact.tokenizer_path, spec)

    # -- steps ---------------------------------------------------------------------------------

    def _quality(self, url: str, detail: dict[str, Any], spec: MetricSpec) -> list[dict[str, str]] | None:
        test_set = self.o.test_set
        if test_set is None:
            self.result["quality"] = None
            return None
        self.say(f"checking the test set {test_set} against the dataset rules")
        report = check_dataset(test_set, "test", spec)
        errors = [str(f) for f in report.findings if f.severity == "error"]
        warnings = [str(f) for f in report.findings if f.severity != "error"]
        counts = ", ".join(f"{k} {v}" for k, v in report.label_counts.items())
        summary = f"{report.rows} rows ({counts}); {len(errors)} errors, {len(warnings)} warnings"
        self.checks.append(
            Check("test set: dataset rules", "no errors", summary, report.ok, errors[0] if errors else "")
        )
        quality: dict[str, Any] = {
            "test_set": str(test_set),
            "data_check_summary": summary,
            "findings": [str(f) for f in report.findings][:50],
        }
        self.result["quality"] = quality
        try:
            rows = read_labelled_csv(test_set, spec)
        except DataFileError as exc:
            quality["skipped"] = f"Not scored: {exc}"
            self.checks.append(Check("quality: scored through HTTP", "test set readable", str(exc), False))
            return None
        self.say(f"scoring {len(rows)} rows through {url}")
        served = served_figures(rows, score_rows(url, spec.name, rows, spec), spec)
        name, reference, reason = pick_reference(
            detail.get("quality") or {}, test_set, self.req.quality.reference
        )
        drift = drift_rows(served, reference) if reference else []
        quality.update(served=served, reference=name, reference_reason=reason, drift=drift)
        if reference is None:
            self.result["notes"].append(f"Quality not compared with the manifest: {reason}.")
        self.checks += quality_checks(served, drift, self.req.quality)
        return rows

    def _pools(self, encoder: PairEncoder, rows: list[dict[str, str]] | None) -> dict[str, list[Payload]]:
        req = self.req
        builder = PayloadBuilder(encoder, rows, seed=req.seed)
        rng = random.Random(req.seed)
        pools = {
            level: builder.pool(draw_sizes(point, req.load.distribution, POOL_ITEMS, rng))
            for level, point in (("average", req.load.average), ("peak", req.load.peak))
        }
        source = "customer test set" if rows else "seeded English generator"
        self.result["payloads"] = {k: {**summarize(v), "source": source} for k, v in pools.items()}
        return pools

    def _scenario(self, url: str, pools: dict[str, list[Payload]], placement: Placement) -> LoadRun:
        plan = build_plan(
            self.req, scenario_stages(self.req), pools, self.out / "load", workers=self.o.workers
        )
        self.say(
            f"load scenario: {len(plan.stages)} stages, {plan.duration_s:.0f}s, up to "
            f"{plan.users_for(self.req.load.peak.qps)} users at {plan.per_user_qps:.3g} QPS each"
            + (f", {self.o.workers} Locust workers" if self.o.workers else "")
        )
        run = run_plan(plan, url, placement, workers=self.o.workers, label="load scenario")
        self.checks += [Check.from_dict(c) for c in run.verdict["checks"]]
        self.result["load"] = {
            "out_dir": str(run.out_dir),
            "stages": run.verdict["stages"],
            "arrivals": plan.arrivals,
            "users_note": f"{plan.per_user_qps:.3g} QPS per Locust user",
            "workers": self.o.workers,
        }
        return run

    def _search(self, url: str, pools: dict[str, list[Payload]], placement: Placement) -> SearchResult | None:
        cap = self.req.capacity
        if not (cap.enabled and self.o.search):
            self.result["notes"].append("Capacity search skipped; headroom not judged.")
            return None
        steps = 0

        def probe(qps: float) -> Probe:
            nonlocal steps
            steps += 1
            out = self.out / "search" / f"step-{steps:02d}"
            plan = build_plan(self.req, step_stages(self.req, qps), pools, out, workers=self.o.workers)
            result = probe_of(
                run_plan(plan, url, placement, workers=self.o.workers, label=f"step {steps}"), qps
            )
            self.say(
                f"  step {steps}: {qps:.1f} QPS -> {'pass' if result.passed else 'fail'}"
                f" (p99 {result.p99_ms if result.p99_ms is None else round(result.p99_ms, 1)} ms)"
            )
            return result

        self.say(f"capacity search from the peak of {self.req.load.peak.qps:g} QPS (growth {cap.growth:g})")
        return step_search(
            probe,
            self.req.load.peak.qps,
            growth=cap.growth,
            resolution=cap.resolution,
            max_steps=cap.max_steps,
            max_qps=cap.max_qps,
        )

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> SignoffOutcome:
        self.out.mkdir(parents=True, exist_ok=True)
        placement = place()
        server: LocalServer | None = None
        started = dt.datetime.now(dt.UTC)
        try:
            url = self.o.url
            if url is None:
                repository = self.o.repository or DEFAULT_REPOSITORY
                server = LocalServer.placed(
                    repository, placement, self.out / "server.log", self.o.server_args
                )
                self.say(f"starting lunaserve serve --repository {repository}: {placement.describe()}")
                url = server.start().url
            url = url.rstrip("/")
            detail = fetch_metric(url, self.req.metric)
            spec = MetricSpec.model_validate(detail["spec"])
            self.result["target"] = {
                "url": url,
                "metric": spec.name,
                "version": detail["active_version"],
                "started_server": server is not None,
                "placement": placement.describe() if server else "server given by URL",
            }
            if spec.use_case != self.req.use_case:
                self.result["notes"].append(
                    f"The requirements state use case {self.req.use_case};"
                    f" the metric's spec says {spec.use_case}."
                )
            encoder = self._encoder(detail, spec)
            rows = self._quality(url, detail, spec)
            pools = self._pools(encoder, rows)
            run = self._scenario(url, pools, placement)
            search = self._search(url, pools, placement)
            self._capacity(search)
        finally:
            if server is not None:
                self.say("stopping the server")
                server.stop()
        self.result["started_at"] = started.isoformat(timespec="seconds")
        self.result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.result["checks"] = [c.to_dict() for c in self.checks]
        self.result["passed"] = all(c.passed for c in self.checks)
        json_path = self.out / "signoff.json"
        json_path.write_text(json.dumps(self.result, indent=2, default=str) + "\n", encoding="utf-8")
        paths = write_report(self.result, read_samples(run.out_dir / "samples.csv"), self.out)
        return SignoffOutcome(bool(self.result["passed"]), self.checks, {"json": json_path, **paths})

    def _capacity(self, search: SearchResult | None) -> None:
        req = self.req
        self.result["search"] = search.to_dict() if search else None
        sustainable = search.sustainable_qps if search else None
        price = req.cost.replica_hourly_usd if req.cost else None
        plan = plan_capacity(
            sustainable, req.load.peak.qps, req.load.average.qps, req.request.items_per_request, price
        )
        self.result["capacity"] = plan.to_dict()
        if search is not None:
            self.checks += capacity_checks(plan, req.capacity.min_headroom)
            if search.stopped_by == "max_qps":
                self.result["notes"].append(
                    f"The search stopped at capacity.max_qps ({req.capacity.max_qps:g}): the"
                    " sustainable rate is at least that, headroom and replicas are bounds."
                )
