"""Rows of a local data file: .csv, .tsv, .jsonl, .json (JSON Lines or one array), .parquet.

One reader for every data option that takes a file (data=local, data=jsonl), so every file gets the
same checks, each failing with one line that names the file, the line and the fix: an encoding
other than data.encoding, an empty file, a CSV without its header row, a JSON line that is not an
object, a column that is missing or empty.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path



class DataError(ValueError):
    """Data that cannot be used; the message says which file, line or key and what to do."""

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def _names(fields: list[str]) -> str:
    return ", ".join(repr(f) for f in fields)


def _guess(raw: bytes) -> str:
    """The likeliest encoding of bytes that are not UTF-8, for the hint."""
    if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\0" in raw[:200]:
        return "utf-16"
    if re.search(rb"[\x80-\x9f]", raw):  # printable in Windows-1252 (curly quotes, dashes), controls in latin-1
        try:
            raw.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return "latin-1"


def _text(path: Path, encoding: str) -> str:
    """The file decoded with data.encoding; a bad byte names its line and the setting that fixes it."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding={encoding!r} is not a known encoding (e.g. utf-8, latin-1, cp1252, "
                        "utf-16)") from None
    raw = path.read_bytes()
    try:
        # utf-8-sig reads plain UTF-8 too and drops the byte-order mark spreadsheets write
        text = raw.decode("utf-8-sig" if codec == "utf-8" else encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid {encoding} (byte 0x{raw[e.start]:02x}); the file has another "
                        f"encoding: set data.encoding= to it, e.g. data.encoding={_guess(raw)}") from None
    if "\0" in text and not codec.startswith("utf-16") and not codec.startswith("utf-32"):
        # UTF-16 text without a byte-order mark is valid UTF-8 (ASCII letters and NUL bytes)
        line = text[: text.index("\0")].count("\n") + 1
        raise DataError(f"{path}:{line}: NUL bytes in a {encoding} text file: it looks UTF-16; set "
                        "data.encoding=utf-16 (or utf-16-le / utf-16-be)")
    return text


def _delimited(path: Path, text: str, fields: list[str]) -> list[tuple[int, dict]]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns {_names(fields)} "
                        "on line 1, then one row per example")
    header = [h.strip() for h in header]
    missing = [f for f in fields if f not in header]
    if missing:
        hint = ""
        if delimiter == "," and len(header) == 1 and "\t" in header[0]:
            hint = " The row looks tab-separated: name the file .tsv."
        raise DataError(f"{path}:1: line 1 must be a header row naming the columns {_names(fields)}; it has "
                        f"{header} (no {_names(missing)}). Add the header row, or name the file's columns with "
                        f"the data.*_field settings.{hint}")
    rows = []
    line = 1
    try:
        for values in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span lines: name the row's first
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) > len(header):
                raise DataError(f"{path}:{start}: {len(values)} fields but the header has {len(header)}; quote a "
                                f"field that contains {'a tab' if delimiter == chr(9) else 'a comma'} "
                                "(\"like, this\")")
            rows.append((start, dict(zip(header, values))))
    except csv.Error as e:  # e.g. a field over the csv module's 128 KiB limit
        raise DataError(f"{path}:{line + 1}: not readable as {path.suffix[1:].upper()} ({e})") from None
    return rows


def _json(path: Path, text: str) -> list[tuple[int, dict]]:
    """JSON Lines (one object a line), or a .json file holding one array of objects (Alpaca style)."""
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        rows = []
        for i, row in enumerate(items):
            if not isinstance(row, dict):
                raise DataError(f"{path}: item {i} of the array is a JSON {type(row).__name__}, not an object "
                                "like {\"column\": value, ...}")
            rows.append((f"item {i}", row))
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if path.suffix == ".json" and isinstance(_whole(text), dict):
                raise DataError(f"{path}: holds one JSON object; expected an array of objects [{{...}}, ...] "
                                "or one object per line") from None
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line "
                            "(or, in a .json file, one array of objects)") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__} "
                            "(each line must be one object like {\"column\": value, ...})")
        rows.append((lineno, row))
    return rows


def _whole(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _parquet(path: Path) -> list[tuple[int, dict]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    return [(f"row {i}", row) for i, row in enumerate(table.to_pylist())]


def _empty(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def read_records(path: str | Path, fields: list[str], encoding: str = "utf-8",
                 text_columns: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a local data file holding the columns `fields` (each non-empty in every row); the
    columns in `text_columns` must hold strings in every row."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data.path={path} is a directory; point it at a file ({', '.join(SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"data file not found: {path} (set data.path)")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use {', '.join(SUFFIXES)})")
    if path.suffix == ".parquet":
        rows = _parquet(path)
    else:
        text = _text(path, encoding)
        if not text.strip():
            raise DataError(f"{path}: the file is empty; expected "
                            + (f"a header row naming the columns {_names(fields)} on line 1, then one row per "
                               "example" if path.suffix in (".csv", ".tsv") else
                               f"JSON objects with the keys {_names(fields)}"))
        rows = _delimited(path, text, fields) if path.suffix in (".csv", ".tsv") else _json(path, text)
    if not rows:
        raise DataError(f"{path}: no examples (the file has a header or an empty array but no rows)")
    where = lambda at: f"{path}:{at}" if isinstance(at, int) else f"{path} ({at})"  # noqa: E731
    for f in fields:
        if all(_empty(row.get(f)) for _, row in rows):
            absent = all(f not in row for _, row in rows)
            raise DataError(f"{path}: column {f!r} is {'absent' if absent else 'empty'} in all {len(rows)} rows; "
                            f"the rows have {sorted(rows[0][1])}: fill it in or set the matching data.*_field")
    for at, row in rows:
        missing = [k for k in fields if row.get(k) is None]
        if missing:
            raise DataError(f"{where(at)}: missing column(s) {missing}; the row has {sorted(row)}")
        empty = [k for k in fields if _empty(row[k])]
        if empty:
            raise DataError(f"{where(at)}: empty value in column(s) {empty}; fill it in or drop the row")
        for k in text_columns:
            if not isinstance(row[k], str):
                raise DataError(f"{where(at)}: column {k!r} holds {not_text(row[k])}, not text; it would be trained "
                                "on as its Python string form: make it a string or fix the column")
    return [row for _, row in rows]


def not_text(v) -> str:
    """What a non-string value is, for an error line: 'a JSON object ({"a": 1})', 'the number 3'."""
    import json

    kind = {dict: "a JSON object", list: "a JSON array", bool: "a boolean", int: "the number", float: "the number"}
    shown = json.dumps(v, default=str)
    return f"{kind.get(type(v), type(v).__name__)} {shown[:40] + ('...' if len(shown) > 40 else '')}"
