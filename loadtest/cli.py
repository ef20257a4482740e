"""`lunaserve signoff`: arguments -> `Signoff` -> exit code (0 only if every requirement passed).

`lunaserve.cli` mounts `add_arguments` and `run` as its `signoff` subcommand; `main` runs the same
parser alone. Exit codes: 0 every requirement passed; 1 some requirement failed (the report says
which); 2 the sign-off could not run (bad requirements file, unreachable server, missing
tokenizer...). Expected failures print one `lunaserve signoff: error: ...` line, never a traceback.
Every path is resolved against the caller's working directory before anything starts, because
the server and Locust run from the project root.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

USAGE_ERROR = 2


DESCRIPTION = "Load-test and quality-check a metric against its owner's stated requirements."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lunaserve signoff", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requirements",
        type=Path,
        required=True,
        help="requirements YAML (see loadtest/requirements.example.yaml)",
    )
    parser.add_argument(
        "--test-set",
        type=Path,
        help="labelled test CSV: checked, scored through HTTP, and the source of payload text",
    )
    where = parser.add_argument_group("server (default: start lunaserve serve on ./repository)")
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (not started or stopped)")
    where.add_argument(
        "--repository",
        type=Path,
        help="model repository: served when no --url is given; "
        "with --url, where the served version's tokenizer is read",
    )
    where.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer.json of the served metric (instead of --repository with --url)",
    )
    where.add_argument(
        "--server-args",
        default="",
        help="extra `lunaserve serve` flags when it is started "
        'here, one string, e.g. "--batching.max_wait_ms 1"',
    )
    parser.add_argument("--out", type=Path, help="output folder (default build/signoff/<metric>-<time>)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run Locust as a master with this many local workers (for rates beyond one generator process)",
    )
    parser.add_argument("--no-search", action="store_true", help="skip the capacity step search")


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().resolve()


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --help)
        return int(exc.code or 0)
    return run(args)


def run(args: argparse.Namespace) -> int:
    if args.workers < 0:
        print("lunaserve signoff: error: --workers must be >= 0", file=sys.stderr)
        return USAGE_ERROR
    from loadtest.quality import ServedMetricError
    from loadtest.requirements import RequirementsError, load_requirements
    from loadtest.runner import LoadRunError
    from loadtest.server import ServerStartError
    from loadtest.signoff import Signoff, SignoffOptions

    try:
        requirements = load_requirements(args.requirements)
        out = args.out or Path("build/signoff") / f"{requirements.metric}-{time.strftime('%Y%m%d-%H%M%S')}"
        options = SignoffOptions(
            requirements=args.requirements.resolve(),
            test_set=_absolute(args.test_set),
            url=args.url,
            repository=_absolute(args.repository),
            tokenizer=_absolute(args.tokenizer),
            out_dir=out.expanduser().resolve(),
            workers=args.workers,
            search=not args.no_search,
            server_args=shlex.split(args.server_args),
        )
        outcome = Signoff(options, say=lambda line: print(line, flush=True)).run()
    except (RequirementsError, ServedMetricError, ServerStartError, LoadRunError, ValueError, OSError) as exc:
        print(f"lunaserve signoff: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("lunaserve signoff: interrupted", file=sys.stderr)
        return 130
    print()
    for check in outcome.checks:
        print(check)
    failed = [c for c in outcome.checks if not c.passed]
    verdict = (
        "PASS"
        if outcome.passed
        else f"FAIL: {len(failed)} requirement(s) failed: " + "; ".join(c.name for c in failed)
    )
    print(f"\nsign-off {verdict}")
    for kind, path in outcome.paths.items():
        print(f"{kind}: {path}")
    return 0 if outcome.passed else 1
