"""`lunaserve build`: from the customer's files to a live, signed-off metric in one resumable run.

Steps, each writing into one run directory (`<run>/<step>/` plus `<run>/steps/<step>.json`):

    check -> plan -> finetune -> export -> evaluate -> calibrate -> deploy -> signoff

A step is skipped when its inputs (file contents, settings, and the records of the steps before
it) are unchanged since it last succeeded and its outputs still exist; so a re-run after a fix
redoes only what the fix touched, and an interrupted run resumes. The first failed gate (data
rules, parity, a model no better than the trivial scorers, a failed sign-off) stops the run with
its reason; nothing is published before the calibrate step, and a failed step leaves the served
repository as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.runtime.spec import MetricSpec, load_spec

STEPS = ("check", "plan", "finetune", "export", "evaluate", "calibrate", "deploy", "signoff")
EVAL_SHARE = 0.10  # of the training rows, by context, when no eval CSV is given


class BuildStopped(Exception):
    """A gate failed: the message says which and why; the run can be resumed after a fix."""


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 2
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_train_tokens: int = 384
    seed: int = 0
    bf16: bool = False


@dataclass(frozen=True)
class BuildInputs:
    run_dir: Path
    test_csv: Path
    repository: Path
    spec: Path | None = None  # without a preset: the new metric's spec
    preset: Path | None = None  # a repository entry to use as is or fine-tune
    base: Path | None = None  # the checkpoint to fine-tune (the preset's, or a base model)
    train_csv: Path | None = None
    eval_csv: Path | None = None
    requirements: Path | None = None
    judge_column: str | None = None
    approach: str | None = None  # overrides the plan's recommendation
    objective: str = "macro_f1"
    quantization: str = "static"
    evidence: tuple[str, ...] | None = None  # None: the preset's evidence features, if any
    evidence_windowed: tuple[str, ...] = ()
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    url: str | None = None  # a running server to hot-swap into
    admin_key_env: str = "LUNASERVE_ADMIN_KEY"


@dataclass
class StepRecord:
    name: str
    key: str
    status: str  # done | failed | skipped (not needed for this approach)
    elapsed_s: float
    outputs: dict[str, Any]
    reason: str = ""


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        digest.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Build:
    """Runs the steps in order; `say` receives the progress lines."""

    def __init__(self, inputs: BuildInputs, say: Callable[[str], None] = print) -> None:
        self.inputs = inputs
        self.say = say
        self.run_dir = inputs.run_dir
        self.records: dict[str, StepRecord] = {}
        self.started = time.monotonic()

    # -- the step machinery -------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.run_dir / "steps" / f"{name}.json"

    def _key(self, name: str, depends: Mapping[str, Any]) -> str:
        upstream = {n: r.key for n, r in self.records.items()}
        text = json.dumps(
            {"step": name, "inputs": depends, "upstream": upstream}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _step(
        self, name: str, depends: Mapping[str, Any], run: Callable[[Path], dict[str, Any]]
    ) -> dict[str, Any]:
        number = STEPS.index(name) + 1
        key = self._key(name, depends)
        path = self._record_path(name)
        if path.is_file():
            old = StepRecord(**json.loads(path.read_text(encoding="utf-8")))
            if old.key == key and old.status == "done" and _outputs_exist(old.outputs):
                self.records[name] = old
                self.say(f"[{number}/{len(STEPS)}] {name}: unchanged, skipped ({self._elapsed()})")
                return old.outputs
        self.say(f"[{number}/{len(STEPS)}] {name} ... ({self._elapsed()})")
        work = self.run_dir / name
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            outputs = run(work)
        except BuildStopped as exc:
            self._write(StepRecord(name, key, "failed", time.monotonic() - started, {}, str(exc)))
            raise
        record = StepRecord(name, key, "done", round(time.monotonic() - started, 2), outputs)
        self._write(record)
        self.records[name] = record
        self.say(f"[{number}/{len(STEPS)}] {name}: done in {record.elapsed_s:.1f} s")
        return outputs

    def _write(self, record: StepRecord) -> None:
        path = self._record_path(record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s elapsed"

    def _files(self, *paths: Path | None) -> dict[str, str | None]:
        return {str(p): (file_digest(p) if p and p.exists() else None) for p in paths if p is not None}

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        i = self.inputs
        spec = self._spec()
        self._step("check", self._files(i.test_csv, i.train_csv, i.eval_csv), lambda w: self._check(w, spec))
        plan = self._step(
            "plan",
            {**self._files(i.test_csv, i.preset, i.requirements, i.train_csv), "judge": i.judge_column},
            lambda w: self._plan(w, spec),
        )
        approach = i.approach or plan["approach"]
        if approach == "preset_as_is":
            if i.preset is None:
                raise BuildStopped("approach preset_as_is needs --preset")
            entry = i.preset
        else:
            if i.train_csv is None or i.base is None:
                raise BuildStopped(
                    f"approach {approach}: fine-tuning needs --train (about 4,000 rows balanced 50/50) and"
                    " --base (the checkpoint to fine-tune); the plan lists what is missing"
                )
            settings = asdict(i.finetune)
            checkpoint = self._step(
                "finetune",
                {**self._files(i.base, i.train_csv, i.eval_csv), **settings},
                lambda w: self._finetune(w, spec),
            )["checkpoint"]
            entry = Path(
                self._step(
                    "export",
                    {
                        "quantization": i.quantization,
                        "evidence": i.evidence,
                        "evidence_windowed": i.evidence_windowed,
                        **self._files(Path(checkpoint)),
                    },
                    lambda w: self._export(w, spec, Path(checkpoint)),
                )["entry"]
            )
        self._step("evaluate", self._files(entry, i.test_csv, i.preset), lambda w: self._evaluate(w, entry))
        final = Path(
            self._step(
                "calibrate",
                {"objective": i.objective, "repository": str(i.repository), **self._files(entry, i.test_csv)},
                lambda w: self._calibrate(w, entry),
            )["entry"]
        )
        if i.url:
            self._step("deploy", {"url": i.url, **self._files(final)}, lambda w: self._deploy(w, final))
        else:
            self.say("[7/8] deploy: no --url; a server started on the repository serves the new version")
        if i.requirements:
            self._step(
                "signoff",
                {"url": i.url, **self._files(final, i.requirements, i.test_csv)},
                lambda w: self._signoff(w, final),
            )
        else:
            self.say("[8/8] signoff: no --requirements; skipped")
        summary = {
            "approach": approach,
            "entry": str(final),
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "steps": {n: {"status": r.status, "elapsed_s": r.elapsed_s} for n, r in self.records.items()},
        }
        (self.run_dir / "build.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    # -- the steps ---------------------------------------------------------------------------

    def _spec(self) -> MetricSpec:
        i = self.inputs
        if i.preset is not None:
            from service.runtime.artifact import read_manifest

            return read_manifest(i.preset).spec
        if i.spec is None:
            raise BuildStopped("give --preset (a repository entry) or --spec (the new metric's spec)")
        return load_spec(i.spec)

    def _check(self, work: Path, spec: MetricSpec) -> dict[str, Any]:
        from models.data_check import check_dataset

        i = self.inputs
        reports = [check_dataset(i.test_csv, "test", spec, against=i.train_csv)]
        if i.train_csv is not None:
            reports.append(check_dataset(i.train_csv, "train", spec, against=i.test_csv))
        (work / "reports.json").write_text(
            json.dumps([r.to_dict() for r in reports], indent=2), encoding="utf-8"
        )
        for report in reports:
            errors = [str(f) for f in report.findings if f.severity == "error"]
            if errors:
                more = f" (and {len(errors) - 1} more in {work / 'reports.json'})" if len(errors) > 1 else ""
                raise BuildStopped(f"data check failed: {errors[0]}{more}")
        return {"reports": str(work / "reports.json")}

    def _plan(self, work: Path, spec: MetricSpec) -> dict[str, Any]:
        from loadtest.requirements import load_requirements
        from models.plan import make_plan, render_plan

        i = self.inputs
        requirements = load_requirements(i.requirements) if i.requirements else None
        plan = make_plan(
            i.test_csv, spec, preset=i.preset, requirements=requirements, judge_column=i.judge_column,
            train_csv=i.train_csv,
        )  # fmt: skip
        (work / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n", encoding="utf-8")
        (work / "plan.md").write_text(render_plan(plan), encoding="utf-8")
        if plan.approach is None:
            raise BuildStopped(f"plan: {plan.reason}")
        impossible = [c for c in plan.latency if not c["possible"]]
        if impossible:
            raise BuildStopped(
                f"plan: latency at {impossible[0]['level']} load: " + "; ".join(impossible[0]["problems"])
            )
        self.say(f"    plan: {plan.approach} ({plan.reason})")
        return {"approach": plan.approach, "plan": str(work / "plan.md")}

    def _finetune(self, work: Path, spec: MetricSpec) -> dict[str, Any]:
        from models.finetune import finetune

        i, s = self.inputs, self.inputs.finetune
        assert i.train_csv is not None and i.base is not None
        train, evaluation = (
            (i.train_csv, i.eval_csv) if i.eval_csv else split_eval(i.train_csv, work / "data")
        )
        out = work / "checkpoint"
        finetune(
            i.base, train, evaluation, spec, out, epochs=s.epochs, learning_rate=s.learning_rate,
            batch_size=s.batch_size, max_train_tokens=s.max_train_tokens, seed=s.seed, bf16=s.bf16,
        )  # fmt: skip
        return {"checkpoint": str(out), "eval_csv": str(evaluation)}

    def _export(self, work: Path, spec: MetricSpec, checkpoint: Path) -> dict[str, Any]:
        from models.calibrate import next_version
        from models.export import ExportOptions, export_to_repository
        from models.parity import ParityError

        i = self.inputs
        eval_csv = Path(self.records["finetune"].outputs["eval_csv"])
        version = next_version(i.repository, spec.name)
        staged_spec = MetricSpec.model_validate({**spec.model_dump(), "version": version})
        if i.evidence is not None:
            evidence, windowed = i.evidence, i.evidence_windowed
        else:
            evidence, windowed = preset_evidence(i.preset)
        options = ExportOptions(
            quantization=i.quantization,  # type: ignore[arg-type]
            evidence_features=evidence,
            windowed_evidence_features=windowed,
        )
        if evidence:
            self.say(f"    evidence features, weights fitted on {eval_csv.name}: {', '.join(evidence)}")
        staging = work / "repository"
        try:
            entry = export_to_repository(
                checkpoint, staged_spec, staging, eval_csv=eval_csv, options=options, force=True
            )
        except ParityError as exc:
            fp32 = i.quantization in ("weights", "none")
            hint = "" if fp32 else "; try --quantization weights (fp32 compute)"
            raise BuildStopped(f"parity gate: {exc}{hint}") from None
        return {"entry": str(entry)}

    def _evaluate(self, work: Path, entry: Path) -> dict[str, Any]:
        from models.evaluate import evaluate_to_files
        from models.model_card import TRIVIAL_BASELINES

        i = self.inputs
        figures = json.loads(evaluate_to_files(entry, i.test_csv, work / "new")["json"].read_text())
        trivial = {b: f["roc_auc"] for b, f in figures["baselines"].items() if b in TRIVIAL_BASELINES}
        outputs: dict[str, Any] = {
            "figures": str(work / "new" / "evaluation.json"),
            "roc_auc": figures["roc_auc"],
        }
        preset_auc = None
        if i.preset is not None and Path(i.preset) != entry:
            preset = json.loads(evaluate_to_files(i.preset, i.test_csv, work / "preset")["json"].read_text())
            preset_auc = outputs["preset_roc_auc"] = preset["roc_auc"]
            self.say(f"    ROC-AUC on your test set: {figures['roc_auc']:.3f} (preset {preset_auc:.3f})")
        failed = quality_gate(figures["roc_auc"], trivial, preset_auc)
        if failed:
            raise BuildStopped(
                f"quality gate: {failed} on {i.test_csv}; see {work / 'new' / 'evaluation.md'}"
            )
        return outputs

    def _calibrate(self, work: Path, entry: Path) -> dict[str, Any]:
        from models.calibrate import CalibrationError, Objective, calibrate
        from models.evaluate import evaluate_to_files
        from models.repository import record_quality

        i = self.inputs
        try:
            result = calibrate(entry, i.test_csv, Objective.parse(i.objective), repository=i.repository)
        except CalibrationError as exc:
            raise BuildStopped(f"calibrate: {exc}") from None
        figures = json.loads(evaluate_to_files(result.folder, i.test_csv, work / "final")["json"].read_text())
        figures["description"] = (
            f"Your test set ({i.test_csv.name}); the threshold was fitted on these rows"
            " (`lunaserve build`), so the decision figures are optimistic."
        )
        record_quality(result.folder, "customer_test", figures)
        self.say(f"    published {result.folder} (threshold {result.threshold:.4g})")
        return {"entry": str(result.folder), "threshold": result.threshold}

    def _deploy(self, work: Path, final: Path) -> dict[str, Any]:
        import httpx

        i = self.inputs
        assert i.url is not None
        key = os.environ.get(i.admin_key_env)
        if not key:
            raise BuildStopped(f"deploy: set {i.admin_key_env} to an admin key of the server at {i.url}")
        headers = {"Authorization": f"Bearer {key}"}
        name, version = final.parent.name, final.name
        try:
            with httpx.Client(base_url=i.url, headers=headers, timeout=120) as client:
                reload = client.post("/v1/admin/reload")
                reload.raise_for_status()
                activate = client.post(f"/v1/admin/metrics/{name}/activate", json={"version": version})
                activate.raise_for_status()
                served = client.get("/v1/metrics").json()
        except httpx.HTTPStatusError as exc:
            raise BuildStopped(
                f"deploy: {exc.response.status_code} from {exc.request.url}: {exc.response.text[:300]}"
            ) from None
        except httpx.HTTPError as exc:
            raise BuildStopped(f"deploy: cannot reach {i.url}: {exc}") from None
        (work / "served.json").write_text(json.dumps(served, indent=2), encoding="utf-8")
        self.say(f"    {i.url} now serves {name} version {version}")
        return {"served": str(work / "served.json"), "version": version}

    def _signoff(self, work: Path, final: Path) -> dict[str, Any]:
        from loadtest.signoff import Signoff, SignoffOptions

        i = self.inputs
        assert i.requirements is not None
        options = SignoffOptions(
            requirements=i.requirements.resolve(), test_set=i.test_csv.resolve(), url=i.url,
            repository=i.repository.resolve(), out_dir=(work / "report").resolve(),
        )  # fmt: skip
        outcome = Signoff(options, say=lambda line: self.say("    " + line)).run()
        if not outcome.passed:
            failed = "; ".join(str(c) for c in outcome.checks if not c.passed)
            raise BuildStopped(f"sign-off failed: {failed}")
        return {k: str(v) for k, v in outcome.paths.items()}


def quality_gate(roc_auc: float, trivial: Mapping[str, float], preset_roc_auc: float | None) -> str | None:
    """Why a new model must not be published, or None: it has to rank above every trivial scorer
    on the customer's test set and, when it was fine-tuned from a preset, not below the preset."""
    best = max(trivial, key=lambda b: trivial[b])
    if roc_auc <= trivial[best]:
        name = best.replace("_", " ")
        return f"ROC-AUC {roc_auc:.3f} is no better than the {name} scorer ({trivial[best]:.3f})"
    if preset_roc_auc is not None and roc_auc < preset_roc_auc:
        return (
            f"the fine-tuned model's ROC-AUC {roc_auc:.3f} is below the preset's {preset_roc_auc:.3f}:"
            " keep the preset with your threshold (--approach preset_as_is), or train on more rows or"
            " rows closer to your test set"
        )
    return None


def preset_evidence(preset: Path | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The evidence features a preset combines with its encoder (and those of its windowed
    weights): a fine-tuned preset keeps them, with weights fitted again on the new eval rows,
    so that it does not lose what made the preset work out of its training domain."""
    if preset is None:
        return (), ()
    from service.runtime.artifact import read_manifest

    combiner = read_manifest(preset).evidence
    if combiner is None:
        return (), ()
    windowed = combiner.windowed.feature_weights if combiner.windowed is not None else {}
    return tuple(str(f) for f in combiner.feature_weights), tuple(str(f) for f in windowed)


def _outputs_exist(outputs: Mapping[str, Any]) -> bool:
    """Every output that names a file or folder still exists (a deleted output reruns its step)."""
    for value in outputs.values():
        names_a_path = isinstance(value, str) and ("/" in value or value.endswith((".json", ".md", ".csv")))
        if names_a_path and not Path(value).exists():
            return False
    return True


def split_eval(train_csv: Path, out: Path, share: float = EVAL_SHARE) -> tuple[Path, Path]:
    """Train and eval CSVs from one file, by context (a context's rows stay together), seeded."""
    import csv

    with open(train_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    contexts = sorted({r.get("context", "") for r in rows})
    random.Random(0).shuffle(contexts)
    held = set(contexts[: max(1, round(len(contexts) * share))])
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "train.csv", out / "eval.csv")
    for path, keep in zip(paths, (False, True), strict=True):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(r for r in rows if (r.get("context", "") in held) == keep)
    return paths


def clear(run_dir: Path) -> None:
    """Forget every step (a fresh run in the same folder)."""
    shutil.rmtree(run_dir / "steps", ignore_errors=True)
