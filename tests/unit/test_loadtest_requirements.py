"""The requirements schema: the example validates; invalid files fail naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadtest.cli import main
from loadtest.requirements import RequirementsError, load_requirements, parse_requirements

EXAMPLE = Path(__file__).resolve().parents[2] / "loadtest" / "requirements.example.yaml"


def example() -> dict[str, object]:
    raw: dict[str, object] = yaml.safe_load(EXAMPLE.read_text())
    return raw


def write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "req.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_requirements_example_file_validates() -> None:
    req = load_requirements(EXAMPLE)
    assert req.metric == "context_adherence"
    assert req.load.peak.qps >= req.load.average.qps
    assert req.traffic_class == "guardrail"


def test_requirements_missing_budget_names_the_field(tmp_path: Path) -> None:
    raw = example()
    del raw["latency_ms"]["peak"]["p99"]  # type: ignore[index]
    with pytest.raises(RequirementsError, match=r"req\.yaml: invalid requirements: latency_ms\.peak\.p99: "):
        load_requirements(write(tmp_path, raw))


def test_requirements_wrong_type_names_the_field(tmp_path: Path) -> None:
    raw = example()
    raw["load"]["average"]["qps"] = "lots"  # type: ignore[index]
    with pytest.raises(RequirementsError, match=r"load\.average\.qps"):
        load_requirements(write(tmp_path, raw))


def test_requirements_unknown_field_is_refused(tmp_path: Path) -> None:
    raw = example()
    raw["stages"]["peek_s"] = 10  # type: ignore[index]
    with pytest.raises(RequirementsError, match=r"stages\.peek_s: Extra inputs are not permitted"):
        load_requirements(write(tmp_path, raw))


def test_requirements_peak_below_average_is_refused() -> None:
    raw = example()
    raw["load"]["peak"]["qps"] = 1  # type: ignore[index]
    with pytest.raises(RequirementsError, match=r"load: .*peak\.qps \(1\) is below average\.qps"):
        parse_requirements(raw)


def test_requirements_unordered_percentiles_are_refused() -> None:
    raw = example()
    raw["latency_ms"]["average"] = {"p50": 50, "p95": 40, "p99": 100}  # type: ignore[index]
    with pytest.raises(RequirementsError, match=r"latency_ms\.average: .*p50 <= p95 <= p99"):
        parse_requirements(raw)


def test_requirements_not_a_mapping_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RequirementsError, match="must be a YAML mapping"):
        load_requirements(write(tmp_path, ["metric"]))
    with pytest.raises(RequirementsError, match="no such requirements file"):
        load_requirements(tmp_path / "absent.yaml")


def test_requirements_cli_reports_the_field_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = example()
    raw["max_error_ratio"] = 2
    code = main(["--requirements", str(write(tmp_path, raw))])
    err = capsys.readouterr().err
    assert code == 2
    assert "max_error_ratio: Input should be less than or equal to 1" in err
    assert "Traceback" not in err


def test_requirements_cli_usage_error_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "--requirements" in capsys.readouterr().err
