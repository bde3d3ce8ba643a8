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
import itertools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gated.errors import GatedError, PayloadError
from gated.jsonsafe import parse_json

MAX_REPORTED_PROBLEMS = 20
MAX_JSON_LINE_BYTES = 16384
MAX_JSON_LINE_DEPTH = 4

FileFormat = Literal["csv", "jsonl"]


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
    """Read ``path`` whole. ``columns`` maps each accepted name (as ``column_key`` gives it) to its
    canonical column. ``headerless``: the columns, in order, of a CSV file without a header (by
    default a header is required). ``comments``: lines starting with ``#`` are returned apart,
    not read as data. Raises ``error`` for an unreadable or malformed file."""
    problems = Problems(path)
    notes: list[tuple[int, str]] | None = [] if comments else None
    streamed = stream_import_file(path, columns, error, problems, headerless=headerless, comments=notes)
    try:
        rows = list(streamed.rows)
    finally:
        streamed.close()
    problems.raise_if_any(error)
    return ImportFile(path, streamed.format, frozenset(streamed.columns), rows, notes or [])


def _shape(names: Sequence[str]) -> str:
    """``a[,b][,c]``: how a line of these columns looks."""
    return names[0] + "".join(f"[,{name}]" for name in names[1:])


class Problems:
    """The problems met while streaming a file: every one counted, the first
    ``MAX_REPORTED_PROBLEMS`` kept as "file:line: problem" lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.shown: list[str] = []

    def add(self, line: int, text: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_REPORTED_PROBLEMS:
            self.shown.append(f"{self.path}:{line}: {text}")

    def raise_if_any(self, error: type[GatedError]) -> None:
        """Raise ``error`` as ``raise_problems`` words it, when there was any problem."""
        if not self.count:
            return
        shown = list(self.shown)
        if self.count > MAX_REPORTED_PROBLEMS:
            shown.append(f"... and {self.count - MAX_REPORTED_PROBLEMS} more problems")
        raise error(f"{self.path}: {self.count} problem(s), nothing imported\n" + "\n".join(shown))


@dataclass(slots=True)
class StreamedFile:
    """A file being read row by row. ``columns`` is complete for CSV at once (its header) and for
    JSON lines once ``rows`` is exhausted; bad rows are left out and told to ``problems``."""

    path: Path
    format: FileFormat
    columns: set[str]
    rows: Iterator[FileRow]
    size: int = 0  # the file's bytes
    handle: Any = None

    def consumed(self) -> int:
        """Bytes read so far (for a progress estimate)."""
        try:
            return (
                int(self.handle.tell()) if self.handle is not None and not self.handle.closed else self.size
            )
        except (OSError, ValueError):
            return self.size

    def close(self) -> None:
        close = getattr(self.rows, "close", None)
        if close is not None:
            close()
        if self.handle is not None:
            self.handle.close()


def stream_import_file(
    path: Path,
    columns: Mapping[str, str],
    error: type[GatedError],
    problems: Problems,
    *,
    headerless: Sequence[str] = (),
    comments: list[tuple[int, str]] | None = None,
) -> StreamedFile:
    """The reader every import uses (``read_import_file`` for a file read whole): rows come one at
    a time and memory stays flat, so a hold list of a million rows reads like a short one. The file
    stays open until ``rows`` is exhausted or closed. Raises ``error`` at once for an unreadable
    file, a bad header or bytes that are not UTF-8; every other problem goes to ``problems``.
    ``headerless`` and ``comments`` as ``read_import_file`` takes them (``#`` lines are appended
    to ``comments`` as they are met)."""
    try:
        handle = path.open("rb")
    except OSError as problem:
        raise error(f"{path}: cannot read: {problem.strerror or problem}") from None
    size = os.fstat(handle.fileno()).st_size
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="strict", newline="")
    lines = _decoded_lines(path, text, error)
    if comments is not None:
        lines = _without_comments(lines, comments)
    ahead: list[str] = []
    for line in lines:
        ahead.append(line)
        if line.strip():
            break
    if not ahead or not ahead[-1].strip():
        text.close()
        return StreamedFile(path, "csv", set(), iter(()), size)
    if ahead[-1].lstrip().startswith("{"):
        used: set[str] = set()
        rows = _stream_json_lines(path, text, itertools.chain(ahead, lines), columns, problems, used)
        return StreamedFile(path, "jsonl", used, rows, size, handle)
    reader = csv.reader(itertools.chain(ahead, lines), strict=True)
    names, first = _stream_csv_header(path, reader, columns, error, text, headerless)
    rows = _stream_csv(path, text, reader, names, problems, first, fixed=bool(headerless))
    return StreamedFile(path, "csv", set(names), rows, size, handle)


def _without_comments(lines: Iterator[str], comments: list[tuple[int, str]]) -> Iterator[str]:
    """``lines`` with each ``#`` line told to ``comments`` and left blank, so every line keeps its number."""
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("#"):
            comments.append((number, line.strip()))
            yield "\n"
        else:
            yield line


def _decoded_lines(path: Path, text: io.TextIOWrapper, error: type[GatedError]) -> Iterator[str]:
    """The file's lines (ends kept: CR, LF or CRLF, as csv splits them); bytes that are not UTF-8
    raise ``error`` naming the line and the byte, as ``read_import_file`` does."""
    try:
        yield from text
    except UnicodeDecodeError:
        text.close()
        data = path.read_bytes()  # only on this error path: find where the bad byte is
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as problem:
            number = data[: problem.start].count(b"\n") + 1
            raise error(f"{path}:{number}: not UTF-8 text (byte {problem.start})") from None
        raise error(f"{path}: not UTF-8 text") from None


def _stream_json_lines(
    path: Path,
    text: io.TextIOWrapper,
    lines: Iterator[str],
    columns: Mapping[str, str],
    problems: Problems,
    used: set[str],
) -> Iterator[FileRow]:
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = parse_json(
                    line.rstrip("\r\n"), max_bytes=MAX_JSON_LINE_BYTES, max_depth=MAX_JSON_LINE_DEPTH
                )
            except PayloadError as problem:
                problems.add(number, f"not valid JSON: {problem}")
                continue
            if not isinstance(value, dict):
                problems.add(number, f"expected a JSON object, got {type(value).__name__}")
                continue
            values: dict[str, str | None] = {}
            bad = False
            for key, item in value.items():
                name = columns.get(column_key(key))
                if name is None:
                    problems.add(number, f"unknown key {key[:40]!r}")
                elif name in values:
                    problems.add(number, f"{key[:40]!r} names the {name} a second time")
                elif item is not None and not isinstance(item, str):
                    problems.add(number, f"{name} must be text, got {type(item).__name__}")
                else:
                    values[name] = item
                    continue
                bad = True
            used.update(values)
            if not bad:
                yield FileRow(number, values)
    finally:
        text.close()


def _stream_csv_header(
    path: Path,
    reader: Any,
    columns: Mapping[str, str],
    error: type[GatedError],
    text: io.TextIOWrapper,
    headerless: Sequence[str],
) -> tuple[list[str], tuple[int, list[str]] | None]:
    """The canonical names of the columns, from the header (the first line that is not blank) or
    ``headerless``; in that case also the first line's number and record, which is data."""
    try:
        return _csv_header(path, reader, columns, error, headerless)
    except BaseException:
        text.close()
        raise


def _csv_header(
    path: Path, reader: Any, columns: Mapping[str, str], error: type[GatedError], headerless: Sequence[str]
) -> tuple[list[str], tuple[int, list[str]] | None]:
    start = 1
    try:
        for record in reader:
            line = start
            start = reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            known = [columns.get(column_key(cell)) for cell in record]
            if not any(known):
                if headerless:
                    return list(headerless), (line, record)
                expected = ", ".join(sorted(set(columns.values())))
                raise error(f"{path}:{line}: no header: the first line must name the columns ({expected})")
            names: list[str] = []
            problems: list[str] = []
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
            return names, None
    except csv.Error as problem:
        raise_problems(path, [f"{path}:{reader.line_num}: malformed CSV: {problem}"], error)
    return [], None


def _stream_csv(
    path: Path,
    text: io.TextIOWrapper,
    reader: Any,
    names: list[str],
    problems: Problems,
    first: tuple[int, list[str]] | None,
    *,
    fixed: bool,
) -> Iterator[FileRow]:
    """The rows after the header (``first``: a header-less file's first row, read already);
    ``fixed``: the file has one shape, the caller's, and a long row is told that shape."""
    width = len(names)
    start = reader.line_num + 1
    try:
        records = itertools.chain([first], _numbered(reader, start)) if first else _numbered(reader, start)
        for line, record in records:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) > width:
                if fixed:
                    problems.add(line, f"expected {_shape(names)}, got {len(record)} fields")
                else:
                    problems.add(line, f"{len(record)} fields, the header has {width}")
                continue
            yield FileRow(line, dict(zip(names, record, strict=False)))
    except csv.Error as problem:
        problems.add(reader.line_num, f"malformed CSV: {problem}")
    finally:
        text.close()


def _numbered(reader: Any, start: int) -> Iterator[tuple[int, list[str]]]:
    """Each record with the number of the line it starts on."""
    for record in reader:
        line = start
        start = reader.line_num + 1
        yield line, record
