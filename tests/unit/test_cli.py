"""`lunaserve`: one parser, one exit-code convention, and every command from any folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import loadtest.signoff
from lunaserve.cli import main
from models.counterfactual import KINDS
from tests.conftest import ROOT


def test_cli_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status" in out
    assert "0  done" in out and "1  a check failed" in out and "2  usage or input error" in out


def test_cli_verbose_signoff_without_requirements_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-v", "signoff"]) == 2
    err = capsys.readouterr().err
    assert "--requirements" in err and "Traceback" not in err


def test_cli_unknown_subcommand_and_bad_setting_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert main(["serve", "--batching.max_batch_tokens", "3"]) == 2
    assert "invalid setting batching.max_batch_tokens" in capsys.readouterr().err


def test_cli_serve_with_nothing_to_serve_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--repository", str(tmp_path)]) == 2
    assert "nothing to serve" in capsys.readouterr().err


class FakeSignoff:
    """Stands in for `loadtest.signoff.Signoff`: records the options it was given."""

    options: Any = None

    def __init__(self, options: Any, say: Any) -> None:
        FakeSignoff.options = options

    def run(self) -> loadtest.signoff.SignoffOutcome:
        return loadtest.signoff.SignoffOutcome(passed=True, checks=[], paths={})


def test_cli_signoff_paths_resolve_against_the_callers_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and Locust run from the project root: a relative --out (or its default) and
    every other path must already be absolute, taken from where the command was run."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    raw = yaml.safe_load((ROOT / "loadtest" / "requirements.example.yaml").read_text())
    (elsewhere / "req.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(loadtest.signoff, "Signoff", FakeSignoff)
    assert main(["-v", "signoff", "--requirements", "req.yaml", "--url", "http://127.0.0.1:9"]) == 0
    options = FakeSignoff.options
    assert options.requirements == elsewhere / "req.yaml"
    assert options.out_dir.is_absolute() and options.out_dir.parent == elsewhere / "build" / "signoff"
    relative = ["--repository", "repo", "--out", "out", "--test-set", "t.csv"]
    assert main(["signoff", "--requirements", "req.yaml", *relative]) == 0
    options = FakeSignoff.options
    assert (options.out_dir, options.repository, options.test_set) == (
        elsewhere / "out",
        elsewhere / "repo",
        elsewhere / "t.csv",
    )


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--counterfactual-pairs", "-3", "expected a whole number, 0 or more"),
        ("--train-contexts", "poetry=3", "TASK one of qa, dialogue, summarization"),
        ("--counterfactual-weights", "rumour=2", "KIND one of entity_swap, recombination, number_change"),
        ("--counterfactual-weights", "number_change=-1", "N a count (0 leaves it out)"),
        ("--counterfactual-weights", ",".join(f"{k}=0" for k in KINDS), "every counterfactual kind has"),
    ],
)
def test_cli_halueval_counts_are_checked_before_any_work(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "halueval", flag, value]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--revert-if-auc-drops", "1.5", "expected a ROC-AUC margin from 0 to 1"),
        ("--attention-dropout", "-0.1", "expected a probability from 0 to 1"),
        ("--attention-dropout", "none", "expected a probability from 0 to 1"),
    ],
)
def test_cli_finetune_fractions_are_checked_before_any_work(
    flag: str, value: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["finetune", "--base", str(tmp_path), "--train", "t.csv", "--eval", "e.csv", "--out", "o"]
    assert main([*args, flag, value]) == 2
    assert says in capsys.readouterr().err


def test_cli_quantization_choices_are_the_exporters() -> None:
    from typing import get_args

    from lunaserve.cli import QUANTIZATIONS
    from models.export import Quantization

    assert list(get_args(Quantization)) == QUANTIZATIONS
