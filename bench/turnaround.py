"""The customer path's turnaround: from a customer's files to a signed-off live metric, timed.

The realistic case of issue 12: a 4,000-row training set balanced 50/50 and a 300-row test set,
both drawn from HaluEval as for the default metric (`lunaserve data halueval`, the same
context-hash split, so no test context is trained on) and the sign-off requirements of
`bench/turnaround.requirements.yaml` (a guardrail on a 2-core replica; its header says why they
are not the example's). A server runs on a copy of the shipped repository (admin
API on) and serves `context_adherence` version 2; `lunaserve build` is run as a user runs it
and replaces that metric with a version fine-tuned from the base model on the customer's rows
(`specs/context_adherence.yaml`, the plan's `custom_metric`: the longest path), through export
with the parity gate, evaluation against the trivial scorers, threshold, hot swap into that
server and sign-off. `--preset repository/context_adherence/2` runs the preset path instead
(the plan decides; `--approach` overrides it).

Preparing the customer's files (download, sampling) is timed apart: the customer brings them.
Not a test: the figures go into the README and the issue note.

    python bench/turnaround.py                      # the whole case (about an hour here)
    python bench/turnaround.py --train-contexts qa=20,dialogue=20,summarization=10 \\
        --test-pairs 40 --requirements R.yaml       # a quick run of the same path
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.server import LocalServer  # noqa: E402

CUSTOMER_COLUMNS = ("input", "output", "context", "label")
TASKS = ("qa", "dialogue", "summarization")
ADMIN_KEY = "turnaround-admin"


def lunaserve(*args: str, log: Path) -> None:
    """One CLI step as a user runs it; its output goes to `log` and, on failure, to the error."""
    command = [sys.executable, "-m", "lunaserve.cli", *args]
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ lunaserve {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"lunaserve {args[0]} failed ({done.returncode}); end of {log}:\n{tail}")


def customer_csv(rows: list[dict[str, str]], path: Path) -> Path:
    """What a customer hands over: input, output, context, label (no provenance columns)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CUSTOMER_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_set(data: Path, pairs_per_task: int, seed: int) -> list[dict[str, str]]:
    """`pairs_per_task` whole pairs (a context's faithful and hallucinated response) per task."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for task in TASKS:
        by_context: dict[str, list[dict[str, str]]] = {}
        for row in read_rows(data / f"{task}_test.csv"):
            by_context.setdefault(row["context_id"], []).append(row)
        pairs = sorted(
            k for k, v in by_context.items() if {r["label"] for r in v} == {"supported", "hallucinated"}
        )
        for key in rng.sample(pairs, min(pairs_per_task, len(pairs))):
            rows.extend(by_context[key][:2])
    return rows


def cpu_description() -> dict[str, object]:
    """The CPU the figures were taken on (bench/server_load.py's reading, and finetune's bf16 check)."""
    from bench.server_load import _cpu_model
    from models.finetune import native_bf16

    return {
        "cpus": os.cpu_count(),
        "model": _cpu_model() or platform.processor(),
        "native_bf16": native_bf16(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "turnaround")
    parser.add_argument(
        "--train-contexts", default="qa=700,dialogue=800,summarization=500",
        help="train-split contexts per task, two rows each (default: 4,000 rows)",
    )  # fmt: skip
    parser.add_argument("--test-pairs", type=int, default=50, help="test pairs per task (default: 300 rows)")
    parser.add_argument("--requirements", type=Path, default=ROOT / "bench" / "turnaround.requirements.yaml")
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "context_adherence.yaml")
    parser.add_argument("--preset", type=Path, help="a repository entry: the preset path (default: none)")
    parser.add_argument("--approach", choices=["preset_as_is", "finetune_preset", "custom_metric"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-train-tokens", type=int, default=256)
    parser.add_argument("--quantization", default="weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("requirements", "spec"):
        if not getattr(args, name).is_file():
            parser.error(f"--{name} {getattr(args, name)}: no such file")
    if args.preset is not None and not (args.preset / "manifest.json").is_file():
        parser.error(f"--preset {args.preset}: not a repository entry (no manifest.json)")

    work = args.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "steps.log"

    # The customer's files (not part of the turnaround).
    prep_started = time.monotonic()
    downloads = ROOT / "build" / "downloads"
    lunaserve("base", "fetch", "--cache", str(downloads), log=log)
    data = work / "halueval"
    lunaserve(
        "data", "halueval", "--out", str(data), "--cache", str(downloads), "--seed", str(args.seed),
        "--train-contexts", args.train_contexts, "--counterfactual-pairs", "0", log=log,
    )  # fmt: skip
    train = customer_csv(read_rows(data / "train.csv"), work / "train.csv")
    test = customer_csv(test_set(data, args.test_pairs, args.seed), work / "test.csv")
    repository = work / "repository"
    shutil.copytree(ROOT / "repository", repository)
    chosen = (
        ["--preset", str(repository / args.preset.parent.name / args.preset.name)]
        if args.preset
        else ["--spec", str(args.spec.resolve())]
    )
    if args.approach:
        chosen += ["--approach", args.approach]
    prep_s = time.monotonic() - prep_started

    env = {"LUNASERVE_AUTH__ADMIN_KEYS": json.dumps([ADMIN_KEY])}
    # the customer's replica: the whole machine (the sign-off's load generator shares it)
    with LocalServer(repository, work / "server.log", env=env, threads=os.cpu_count() or 1) as server:
        started = time.monotonic()
        build = subprocess.run(
            [
                sys.executable, "-m", "lunaserve.cli", "build", "--run", str(work / "run"),
                "--test", str(test), *chosen, "--repository", str(repository),
                "--base", str(downloads / "minilm"),
                "--train", str(train), "--requirements", str(args.requirements.resolve()),
                "--epochs", str(args.epochs),
                "--max-train-tokens", str(args.max_train_tokens), "--quantization", args.quantization,
                "--bf16", "--seed", str(args.seed), "--url", server.url,
            ],
            cwd=ROOT, env={**os.environ, "LUNASERVE_ADMIN_KEY": ADMIN_KEY},
        )  # fmt: skip
        wall_s = time.monotonic() - started
    summary_path = work / "run" / "build.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    plan_path = work / "run" / "plan" / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    result = {
        "passed": build.returncode == 0,
        "wall_s": round(wall_s, 1),
        "prepare_files_s": round(prep_s, 1),
        "train_rows": len(read_rows(train)),
        "test_rows": len(read_rows(test)),
        "plan_recommended": plan.get("approach"),
        "plan_reason": plan.get("reason"),
        "steps": summary.get("steps", {}),
        "entry": summary.get("entry"),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "cpu": cpu_description(),
    }
    (work / "turnaround.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\n{'passed' if result['passed'] else 'FAILED'}:"
        f" {result['wall_s'] / 60:.1f} min from the files to sign-off"
    )
    print(
        f"({result['train_rows']} training rows, {result['test_rows']} test rows;"
        f" files prepared in {prep_s:.0f} s)"
    )
    print("| step | seconds |\n|---|---|")
    for name, step in result["steps"].items():
        print(f"| {name} | {step['elapsed_s']:.0f} |")
    print(f"written: {work / 'turnaround.json'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
