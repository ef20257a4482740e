"""The customer contract's dataset rules: can this CSV serve as a metric's test or training set?

Metric owners export these files from spreadsheets, so every finding speaks a spreadsheet user's
language: it names the file, the row as the spreadsheet numbers it (header = row 1) and the column.
A file is read in one streaming pass and rows are remembered only as 16-byte digests, so a
100k-row file checks in seconds. Problems that make the rest of the file unreadable (bad bytes,
broken quoting, not a CSV at all) stop the pass with one error instead of a traceback.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from models.csv_reading import CsvFileError, csv_records, open_csv, single_column_message, sniff
from service.runtime.spec import MetricSpec

LABEL = "label"
MAX_FINDINGS_PER_CODE = 50
"""Findings kept per code; the rest become one summary so a broken 100k-row file stays readable."""


class Severity(StrEnum):
    ERROR = "error"  # the file cannot be used as it is
    WARNING = "warning"  # usable, but against the contract's recommendation


@dataclass(frozen=True)
class Finding:
    severity: Severity
    file: Path
    row: int | None  # spreadsheet row (header = 1); None when about the whole file
    column: str | None
    code: str  # short stable identifier, e.g. "unknown-label"
    message: str

    def __str__(self) -> str:
        where = [str(self.file), *(str(p) for p in (self.row, self.column) if p is not None)]
        return f"{':'.join(where)}: {self.severity}: {self.message}"


@dataclass
class DataCheckReport:
    file: Path
    kind: Literal["test", "train"]
    rows: int
    label_counts: dict[str, int]
    findings: list[Finding]
    sources: dict[str, int] = field(default_factory=dict)  # rows per `source` column value
    generators: dict[str, int] = field(default_factory=dict)  # synthetic rows per `generator`

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def synthetic_rows(self) -> int:
        """Rows whose source says a program or an LLM wrote them (`synthetic`, `synthetic_*`)."""
        return sum(n for source, n in self.sources.items() if source.startswith("synthetic"))

    def synthetic_summary(self) -> str | None:
        if not self.synthetic_rows:
            return None
        share = self.synthetic_rows / max(self.rows, 1)
        by = "; ".join(f"{g}: {n}" for g, n in self.generators.items()) or "generator not stated"
        return f"synthetic rows: {self.synthetic_rows} of {self.rows} ({share:.0%}); by generator: {by}"

    def to_dict(self) -> dict[str, Any]:
        findings = [{**vars(f), "severity": str(f.severity), "file": str(f.file)} for f in self.findings]
        return {
            "file": str(self.file),
            "kind": self.kind,
            "ok": self.ok,
            "rows": self.rows,
            "label_counts": dict(self.label_counts),
            "sources": dict(self.sources),
            "synthetic_rows": self.synthetic_rows,
            "generators": dict(self.generators),
            "findings": findings,
        }


class DataFileError(ValueError):
    """A data file another command cannot use; the message names the file, row and column."""


@dataclass(frozen=True)
class DatasetRules:
    """The contract's numbers, in one place so a customer-specific contract can change them."""

    test_min_rows: int = 150
    """Fewer test rows is an error: quality figures on so few rows are noise."""
    test_recommended: tuple[int, int] = (300, 500)
    """Test sizes outside this range get a warning (too few: wide error bars; too many: labour)."""
    test_min_per_class: int = 100
    """Every class needs this many test rows for its precision and recall to mean anything."""
    train_expected_rows: int = 4000
    """Training set size the fine-tuning recipe was tuned for."""
    train_warn_below_fraction: float = 0.5
    """Warn when training rows fall below this fraction of the expected size (2,000 by default)."""
    train_balance_tolerance: float = 0.10
    """Warn when the largest class share exceeds an even split (1/n_classes) by more than this."""


class _FindingLog:
    """Collects findings, keeping at most MAX_FINDINGS_PER_CODE per code."""

    def __init__(self) -> None:
        self.kept: list[Finding] = []
        self.errors = 0
        self._seen: Counter[str] = Counter()
        self._first: dict[str, Finding] = {}

    def add(
        self, severity: Severity, file: Path, row: int | None, column: str | None, code: str, message: str
    ) -> None:
        self._seen[code] += 1
        self.errors += severity is Severity.ERROR
        if self._seen[code] <= MAX_FINDINGS_PER_CODE:
            finding = Finding(severity, file, row, column, code, message)
            self._first.setdefault(code, finding)
            self.kept.append(finding)

    def close(self) -> list[Finding]:
        """The kept findings, then one summary per code that went over the limit."""
        summaries = []
        for code, count in self._seen.items():
            if count > MAX_FINDINGS_PER_CODE:
                first, more = self._first[code], count - MAX_FINDINGS_PER_CODE
                summaries.append(
                    Finding(
                        first.severity,
                        first.file,
                        None,
                        None,
                        code,
                        f"... and {more} more rows with the same problem ({code})",
                    )
                )
        return self.kept + summaries


class _CsvTable:
    """One streaming pass over a CSV file: yields (row, cells by column name) for data rows.

    A problem that stops the pass is logged and ends the iteration; `complete` says whether the
    whole file was read, so size rules are not judged on half a file.
    """

    def __init__(
        self, path: Path, spec: MetricSpec, required: list[str], log: _FindingLog, *, report_ragged: bool
    ) -> None:
        self.path, self.required, self.log, self.report_ragged = path, required, log, report_ragged
        self.expected = ",".join([*(f.value for f in spec.fields), LABEL])
        self.rows = 0
        self.width = 0  # fields in the header
        self.complete = False

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        try:
            with open_csv(self.path) as stream:
                sniff(stream)
                records = csv_records(stream)
                columns = self._read_header(records)
                if columns is None:
                    return
                for row, fields in records:
                    if any(cell.strip() for cell in fields):  # blank rows are not data
                        self.rows += 1
                        if len(fields) == self.width:
                            yield row, {name: fields[i] for name, i in columns.items()}
                        elif self.report_ragged:
                            self._error(
                                row,
                                None,
                                "ragged-row",
                                f"the row has {len(fields)} fields "
                                f"but the header has {self.width}: a value containing a "
                                "comma must be in double quotes",
                            )
        except CsvFileError as exc:
            self._error(exc.row, None, exc.code, exc.message)
            return
        self.complete = True

    def _read_header(self, records: Iterator[tuple[int, list[str]]]) -> dict[str, int] | None:
        """Column positions by name, or None (after logging why) when rows cannot be checked."""
        row, fields = next(((r, f) for r, f in records if any(c.strip() for c in f)), (1, []))
        if not fields:
            raise CsvFileError("not-csv", f"the file is empty: expected a header row {self.expected}")
        names = [cell.strip() for cell in fields]
        self.width = len(names)
        if len(names) == 1:
            raise CsvFileError("not-csv", single_column_message(names[0], self.expected), row)
        counts = Counter(name for name in names if name)
        for name in sorted(name for name, n in counts.items() if n > 1):
            self._error(
                row,
                name,
                "duplicate-column",
                f"the column {name!r} appears {counts[name]} "
                "times in the header: column names must be unique",
            )
        missing = [name for name in self.required if name not in counts]
        for name in missing:
            self._error(row, name, "missing-column", _missing_column_message(name, names, self.expected))
        if missing or len(counts) != sum(counts.values()):
            return None
        return {name: i for i, name in enumerate(names) if name}  # unnamed columns are dropped

    def _error(self, row: int | None, column: str | None, code: str, message: str) -> None:
        self.log.add(Severity.ERROR, self.path, row, column, code, message)


def _missing_column_message(name: str, names: list[str], expected: str) -> str:
    message = f"missing required column {name!r} (expected a header like {expected})"
    near = [n for n in names if n.casefold() == name.casefold()]
    return f"{message}; there is a column {near[0]!r}: names are case-sensitive" if near else message


def _item_key(cells: dict[str, str], spec: MetricSpec) -> bytes:
    """What makes two rows the same item: the spec's fields, surrounding whitespace ignored."""
    text = "\x00".join(cells.get(f.value, "").strip() for f in spec.fields)  # NUL never in a cell
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _unknown_label_message(value: str, labels: Iterable[str]) -> str:
    allowed = ", ".join(repr(label) for label in labels)
    message = f"label {value!r} is not one of {allowed}"
    near = next((label for label in labels if label.casefold() == value.strip().casefold()), None)
    if near is None:
        return message
    hints = [
        h
        for h, on in (
            ("remove the spaces around it", value != value.strip()),
            ("labels are case-sensitive", near != value.strip()),
        )
        if on
    ]
    return f"{message} (did you mean {near!r}? {'; '.join(hints)})"


@dataclass(frozen=True)
class _OtherFile:
    """The `against` file's items, by key, with the first row each appears on."""

    path: Path
    first_rows: dict[bytes, int]


def _index_other(path: Path, spec: MetricSpec, log: _FindingLog) -> _OtherFile | None:
    table = _CsvTable(path, spec, [f.value for f in spec.required_fields], log, report_ragged=False)
    first_rows: dict[bytes, int] = {}
    for row, cells in table:
        first_rows.setdefault(_item_key(cells, spec), row)
    return _OtherFile(path, first_rows) if table.complete else None


class _LabelledScan:
    """The per-row rules: empty cells, unknown labels, repeats, conflicts and leaks."""

    def __init__(
        self, path: Path, spec: MetricSpec, log: _FindingLog, other: _OtherFile | None, *, keep_rows: bool
    ) -> None:
        self.path, self.spec, self.log, self.other, self.keep_rows = path, spec, log, other, keep_rows
        self.required = [*(f.value for f in spec.required_fields), LABEL]
        self.table = _CsvTable(path, spec, self.required, log, report_ragged=True)
        self.label_counts = dict.fromkeys(spec.labels, 0)
        self.sources: Counter[str] = Counter()
        self.generators: Counter[str] = Counter()
        self.kept: list[dict[str, str]] = []
        self._seen: dict[bytes, tuple[int, str]] = {}
        self._fields = ", ".join(f.value for f in spec.fields)

    def run(self) -> None:
        for row, cells in self.table:
            if not self._valid(row, cells):
                continue
            label = cells[LABEL]
            self.label_counts[label] += 1
            if source := cells.get("source", "").strip():
                self.sources[source] += 1
                if source.startswith("synthetic"):
                    self.generators[cells.get("generator", "").strip() or "not stated"] += 1
            key = _item_key(cells, self.spec)
            self._check_repeat(row, key, label)
            self._check_leak(row, key)
            if self.keep_rows:
                self.kept.append({**{f.value: "" for f in self.spec.fields}, **cells})

    def _valid(self, row: int, cells: dict[str, str]) -> bool:
        empty = [name for name in self.required if not cells[name].strip()]
        for name in empty:
            self._add(Severity.ERROR, row, name, "empty-cell", f"the {name!r} cell is empty")
        label = cells[LABEL]
        unknown = bool(label.strip()) and label not in self.label_counts
        if unknown:
            self._add(
                Severity.ERROR, row, LABEL, "unknown-label", _unknown_label_message(label, self.spec.labels)
            )
        return not empty and not unknown

    def _check_repeat(self, row: int, key: bytes, label: str) -> None:
        first = self._seen.setdefault(key, (row, label))
        if first[0] == row:
            return
        if first[1] == label:
            self._add(
                Severity.WARNING,
                row,
                None,
                "duplicate-row",
                f"duplicate of row {first[0]} (same {self._fields} and label)",
            )
        else:
            self._add(
                Severity.ERROR,
                row,
                LABEL,
                "conflicting-label",
                f"same {self._fields} as row {first[0]}, but labelled {label!r} here and {first[1]!r} there",
            )

    def _check_leak(self, row: int, key: bytes) -> None:
        if self.other is None or (other_row := self.other.first_rows.get(key)) is None:
            return
        self._add(
            Severity.ERROR,
            row,
            None,
            "overlap-with-other",
            f"same {self._fields} as row {other_row} of {self.other.path}: an item in both "
            "the training and the test set leaks the answer into the evaluation",
        )

    def _add(self, severity: Severity, row: int, column: str | None, code: str, message: str) -> None:
        self.log.add(severity, self.path, row, column, code, message)


def _check_test_size(scan: _LabelledScan, rules: DatasetRules) -> None:
    rows, (low, high), add = scan.table.rows, rules.test_recommended, scan.log.add
    if rows < rules.test_min_rows:
        add(
            Severity.ERROR,
            scan.path,
            None,
            None,
            "too-few-rows",
            f"the test set has {rows} rows; "
            f"at least {rules.test_min_rows} are required ({low}-{high} recommended)",
        )
    elif not low <= rows <= high:
        add(
            Severity.WARNING,
            scan.path,
            None,
            None,
            "row-count",
            f"the test set has {rows} rows; {low}-{high} are recommended",
        )
    for label, count in scan.label_counts.items():
        if count < rules.test_min_per_class:
            add(
                Severity.ERROR,
                scan.path,
                None,
                LABEL,
                "too-few-per-class",
                f"class {label!r} has "
                f"{count} rows; the test set needs at least {rules.test_min_per_class} per class",
            )


def _check_train_size(scan: _LabelledScan, rules: DatasetRules) -> None:
    rows, counts, add = scan.table.rows, scan.label_counts, scan.log.add
    floor = rules.train_expected_rows * rules.train_warn_below_fraction
    if rows == 0:
        add(Severity.ERROR, scan.path, None, None, "too-few-rows", "the file has no data rows")
    elif rows < floor:
        add(
            Severity.WARNING,
            scan.path,
            None,
            None,
            "row-count",
            f"the training set has {rows:,} "
            f"rows; about {rules.train_expected_rows:,} are expected (fewer than {floor:,.0f} risks "
            "an undertrained metric)",
        )
    total, even = sum(counts.values()), 1 / len(counts)
    if total and round(max(counts.values()) / total - even, 9) > rules.train_balance_tolerance:
        shares = ", ".join(f"{label} {n / total:.1%}" for label, n in counts.items())
        points = rules.train_balance_tolerance * 100
        add(
            Severity.WARNING,
            scan.path,
            None,
            LABEL,
            "class-imbalance",
            f"classes are not balanced: "
            f"{shares} (even split {even:.1%}, tolerance {points:g} percentage points)",
        )


def check_dataset(
    path: Path,
    kind: Literal["test", "train"],
    spec: MetricSpec,
    *,
    against: Path | None = None,
    rules: DatasetRules | None = None,
) -> DataCheckReport:
    """Check a test or training CSV against the contract; `against` is the other set (leakage)."""
    if kind not in ("test", "train"):
        raise ValueError(f"kind must be 'test' or 'train', not {kind!r}")
    rules = rules or DatasetRules()
    log = _FindingLog()
    other = None if against is None else _index_other(Path(against), spec, log)
    scan = _LabelledScan(Path(path), spec, log, other, keep_rows=False)
    scan.run()
    if scan.table.complete:
        (_check_test_size if kind == "test" else _check_train_size)(scan, rules)
    return DataCheckReport(
        Path(path),
        kind,
        scan.table.rows,
        scan.label_counts,
        log.close(),
        sources=dict(scan.sources),
        generators=dict(scan.generators),
    )


def read_labelled_csv(path: Path, spec: MetricSpec) -> list[dict[str, str]]:
    """Rows of a labelled CSV for evaluate / finetune, refused on any row-level error.

    Size and balance rules depend on what the set is for, so they stay with `check_dataset`.
    Optional spec fields absent from the file come back as empty strings; extra columns are kept.
    """
    log = _FindingLog()
    scan = _LabelledScan(Path(path), spec, log, None, keep_rows=True)
    scan.run()
    errors = [f for f in log.close() if f.severity is Severity.ERROR]
    if errors:
        more = log.errors - 1
        suffix = f" (and {more} more errors: run `lunaserve data check` to list them)" if more else ""
        raise DataFileError(f"{errors[0]}{suffix}")
    return scan.kept
