"""Reading a customer's CSV defensively: bytes, encoding and CSV syntax, with spreadsheet row numbers.

Files come from spreadsheets, so every problem is phrased for their users: the line and byte
offset of a bad byte, the row of an unclosed quote, "save it as CSV UTF-8". A problem that makes
the rest of the file unreadable raises CsvFileError; rules about the content live in
`models.data_check`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 4096


class CsvFileError(Exception):
    """Stops a pass: the rest of the file cannot be read reliably (`code` names the kind)."""

    def __init__(self, code: str, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.row = code, message, row


def open_csv(path: Path) -> IO[bytes]:
    if path.is_dir():
        raise CsvFileError("unreadable", "this is a directory, not a CSV file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CsvFileError("missing-file", "the file does not exist") from None
    except OSError as exc:
        raise CsvFileError("unreadable", f"cannot open the file: {exc.strerror}") from None


def sniff(stream: IO[bytes]) -> None:
    """Recognise files that are not text before the CSV reader turns them into nonsense."""
    head = stream.read(_SNIFF_BYTES)
    stream.seek(0)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvFileError("encoding", "the file is UTF-16, not UTF-8: save it as 'CSV UTF-8'")
    if head.startswith(b"PK\x03\x04"):
        raise CsvFileError(
            "not-csv", "this is a zip archive (an Excel workbook?), not a CSV: export it as 'CSV UTF-8'"
        )
    if b"\x00" in head:
        raise CsvFileError(
            "not-csv",
            f"binary content (NUL byte at byte offset {head.index(0)}): this is not a text CSV file",
        )


def _encoding_message(raw: bytes, at: int, offset: int, line: int) -> str:
    message = f"not UTF-8: byte 0x{raw[at]:02X} at byte offset {offset} (line {line}) is invalid"
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError:
        return f"{message}; save the file as 'CSV UTF-8'"
    char = bytes([raw[at]]).decode("cp1252")
    return (
        f"{message}; it reads as {char!r} in Windows-1252 / Latin-1, so the file was probably "
        "saved in that encoding: re-save it as 'CSV UTF-8'"
    )


def _text_lines(stream: IO[bytes]) -> Iterator[str]:
    """Decode line by line so a bad byte is reported with its line and offset, not a crash."""
    offset = 0
    for number, raw in enumerate(stream, start=1):
        start = len(_BOM) if number == 1 and raw.startswith(_BOM) else 0
        if (nul := raw.find(b"\x00")) >= 0:
            raise CsvFileError(
                "not-csv",
                f"binary content (NUL byte at byte offset {offset + nul}, "
                f"line {number}): this is not a text CSV file",
            )
        try:
            text = raw[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            at = start + exc.start
            raise CsvFileError("encoding", _encoding_message(raw, at, offset + at, number)) from None
        offset += len(raw)
        yield text


def _csv_error_message(exc: csv.Error, line: int) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return (
            f"a quoted value in this row (from line {line}) is never closed: "
            'look for a stray double quote (")'
        )
    if "field larger than field limit" in text:
        return (
            f"a value is longer than {csv.field_size_limit():,} characters: usually a double "
            f'quote (") opened in this row (line {line}) and never closed'
        )
    if "new-line character" in text:
        return (
            f"line {line} ends with a lone carriage return (old Mac format): save the file "
            "with Windows or Unix line endings"
        )
    return (
        f"malformed CSV on line {line} ({text}): a value containing a double quote must be "
        'quoted and the quote doubled ("")'
    )


def csv_records(stream: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """CSV records numbered as a spreadsheet shows them (a quoted newline stays in its row)."""
    reader = csv.reader(_text_lines(stream), strict=True)
    row = 0
    while True:
        row += 1
        first_line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvFileError("not-csv", _csv_error_message(exc, first_line), row) from None
        except CsvFileError as exc:
            exc.row = row
            raise
        yield row, fields


def single_column_message(name: str, expected: str) -> str:
    shown = name if len(name) <= 80 else f"{name[:77]}..."
    for separator, called in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
        if separator in name:
            return (
                f"the header is a single column {shown!r}: the file looks separated by {called}, "
                "not commas; export it as comma-separated 'CSV UTF-8'"
            )
    return f"the header is a single column {shown!r}; expected comma-separated columns {expected}"


def read_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a CSV file as {column: value}, read with the checks above (one reader for all).

    Raises CsvFileError naming what is wrong, and the row where that is known.
    """
    with open_csv(Path(path)) as stream:
        sniff(stream)
        records = csv_records(stream)
        header = next(records, None)
        if header is None:
            raise CsvFileError("empty", "the file is empty: expected a header row")
        names = header[1]
        rows = []
        for row, fields in records:
            if len(fields) != len(names):
                raise CsvFileError(
                    "ragged", f"row {row} has {len(fields)} values for {len(names)} columns", row
                )
            rows.append(dict(zip(names, fields, strict=True)))
        return rows
