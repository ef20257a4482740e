"""`lunaserve signoff`: arguments -> `Signoff` -> exit code (0 only if every requirement passed).

Exit codes: 0 every requirement passed; 1 some requirement failed (the report says which);
2 the sign-off could not run (bad requirements file, unreachable server, missing tokenizer...).
Expected failures print one `lunaserve signoff: error: ...` line, never a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lunaserve signoff",
        description="Load-test and quality-check a metric against its owner's stated requirements.",
    )
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
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --help)
        return int(exc.code or 0)
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
            requirements=args.requirements,
            test_set=args.test_set,
            url=args.url,
            repository=args.repository,
            tokenizer=args.tokenizer,
            out_dir=out,
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
