"""The one reader for the operator's import files: hold lists and manifests, pre-advice, the
cancelled-card list.

A file is JSON lines (one object per line) when its first line with data starts with ``{``, else
CSV. Either way: a UTF-8 byte order mark (as spreadsheets save) is dropped, the text must be strict
UTF-8, blank lines are skipped, and every problem names ``file:line``. JSON lines go through
``gated.jsonsafe`` (no NaN, no lone surrogates, bounded size and depth) and every value must be
text or null. A CSV file needs a header naming the columns (unless the caller allows a
header-less file with fixed columns), so a file without one is refused instead of its first row
being taken as the header and nothing imported. Any problem rejects the whole file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gated.errors import GatedError, PayloadError
from gated.jsonsafe import parse_json

MAX_REPORTED_PROBLEMS = 20
MAX_JSON_LINE_BYTES = 16384
MAX_JSON_LINE_DEPTH = 4

FileFormat = Literal["csv", "jsonl"]
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class FileRow:
    """One record: its (first) line number and its values by canonical column name."""

    line: int
    values: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class ImportFile:
    """A file as read: its format, the canonical columns it uses, its rows, and its ``#`` comment
    lines (only when the caller allows comments)."""

    path: Path
    format: FileFormat
    columns: frozenset[str]
    rows: list[FileRow]
    comments: list[tuple[int, str]]


def column_key(name: str) -> str:
    """A column name as looked up: trimmed, lower case, spaces and dashes as underscores."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def raise_problems(path: Path, problems: Sequence[str], error: type[GatedError]) -> None:
    """Raise ``error`` listing up to ``MAX_REPORTED_PROBLEMS`` "file:line: problem" lines."""
    if not problems:
        return
    shown = list(problems[:MAX_REPORTED_PROBLEMS])
    if len(problems) > MAX_REPORTED_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more problems")
    raise error(f"{path}: {len(problems)} problem(s), nothing imported\n" + "\n".join(shown))


def read_import_file(
    path: Path,
    columns: Mapping[str, str],
    error: type[GatedError],
    *,
    headerless: Sequence[str] = (),
    comments: bool = False,
) -> ImportFile:
    """Read ``path``. ``columns`` maps each accepted name (as ``column_key`` gives it) to its
    canonical column. ``headerless``: the columns, in order, of a CSV file without a header (by
    default a header is required). ``comments``: lines starting with ``#`` are returned apart,
    not read as data. Raises ``error`` for an unreadable or malformed file."""
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"{path}: cannot read: {problem.strerror or problem}") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        number = data[: problem.start].count(b"\n") + 1
        raise error(f"{path}:{number}: not UTF-8 text (byte {problem.start})") from None
    notes: list[tuple[int, str]] = []
    # Only CR and LF end a line, as in csv: str.splitlines() would also split at U+2028 and friends.
    lines = _LINE_END.split(content)
    for index, line in enumerate(lines):
        if comments and line.lstrip().startswith("#"):
            notes.append((index + 1, line.strip()))
            lines[index] = ""  # kept as a blank line, so every other line keeps its number
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        return ImportFile(path, "csv", frozenset(), [], notes)
    if first.lstrip().startswith("{"):
        rows, used = _read_json_lines(path, lines, columns, error)
        return ImportFile(path, "jsonl", frozenset(used), rows, notes)
    rows, used = _read_csv(path, "\n".join(lines) if notes else content, columns, error, headerless)
    return ImportFile(path, "csv", frozenset(used), rows, notes)


def _read_json_lines(
    path: Path, lines: list[str], columns: Mapping[str, str], error: type[GatedError]
) -> tuple[list[FileRow], set[str]]:
    rows: list[FileRow] = []
    used: set[str] = set()
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = parse_json(line, max_bytes=MAX_JSON_LINE_BYTES, max_depth=MAX_JSON_LINE_DEPTH)
        except PayloadError as problem:
            problems.append(f"{path}:{number}: not valid JSON: {problem}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
            continue
        values: dict[str, str | None] = {}
        for key, item in value.items():
            name = columns.get(column_key(key))
            if name is None:
                problems.append(f"{path}:{number}: unknown key {key[:40]!r}")
                continue
            if name in values:
                # "container" and "container_number" at once: which one is meant must not be a guess.
                problems.append(f"{path}:{number}: {key[:40]!r} names the {name} a second time")
                continue
            if item is not None and not isinstance(item, str):
                problems.append(f"{path}:{number}: {name} must be text, got {type(item).__name__}")
                continue
            values[name] = item
        used.update(values)
        rows.append(FileRow(number, values))
    raise_problems(path, problems, error)
    return rows, used


def _read_csv(
    path: Path,
    text: str,
    columns: Mapping[str, str],
    error: type[GatedError],
    headerless: Sequence[str],
) -> tuple[list[FileRow], set[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[str] = []
    rows: list[FileRow] = []
    names: list[str] = []
    start = 1
    try:
        for record in reader:
            line = start
            start = reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            if not names:
                known = [columns.get(column_key(cell)) for cell in record]
                if any(known):
                    for cell, name in zip(record, known, strict=True):
                        if name is None:
                            problems.append(f"{path}:{line}: unknown column {cell[:40]!r}")
                        elif name in names:
                            problems.append(f"{path}:{line}: column {cell[:40]!r} appears twice")
                        names.append(name or "")
                    if problems and headerless:
                        # A file of fixed columns has one header shape: say it, not each bad name.
                        problems = [f"{path}:{line}: the header must be {_shape(headerless)}"]
                    raise_problems(path, problems, error)
                    continue
                if not headerless:
                    expected = ", ".join(sorted(set(columns.values())))
                    raise error(
                        f"{path}:{line}: no header: the first line must name the columns ({expected})"
                    )
                names = list(headerless)
            if len(record) > len(names):
                if headerless:
                    problems.append(f"{path}:{line}: expected {_shape(names)}, got {len(record)} fields")
                else:
                    problems.append(f"{path}:{line}: {len(record)} fields, the header has {len(names)}")
                continue
            rows.append(FileRow(line, dict(zip(names, record, strict=False))))
    except csv.Error as problem:
        problems.append(f"{path}:{reader.line_num}: malformed CSV: {problem}")
        rows = []
    raise_problems(path, problems, error)
    return rows, set(names)


def _shape(names: Sequence[str]) -> str:
    """``a[,b][,c]``: how a line of these columns looks."""
    return names[0] + "".join(f"[,{name}]" for name in names[1:])
