"""CSV and TSV: encoding, delimiter and header detection, read in chunks with row caps, then typed columns."""

from __future__ import annotations

import codecs
import csv
import io
import re
from typing import Any

import pandas as pd

from core.errors import InvalidInput
from importers.columns import column_names, infer_types, looks_like_header
from importers.limits import Limits, check_columns, check_rows
from importers.options import ImportOptions

CHUNK_ROWS = 200_000
_SAMPLE_BYTES = 65_536
_SAMPLE_LINES = 100
_CANDIDATES = (",", "\t", ";", "|")
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_DECODE_PIECE_BYTES = 1_048_576
# What a text codec raises on bytes it cannot take (idna, punycode, undefined, ... raise more than UnicodeError)
_DECODE_ERRORS = (UnicodeError, ValueError, TypeError, LookupError, IndexError)


def parse_delimited(
    content: bytes, options: ImportOptions, limits: Limits, *, delimiter: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    content, encoding = _decoded_bytes(content, options.encoding)
    sample_rows_text = _sample_lines(content, encoding, options.skip_rows)
    if not sample_rows_text:
        raise InvalidInput("the file has no rows; send a CSV/TSV file with data")
    delimiter = options.delimiter or delimiter or _detect_delimiter(sample_rows_text)
    sample = list(csv.reader(sample_rows_text, delimiter=delimiter))
    sample = [row for row in sample if any(cell.strip() for cell in row)]
    if not sample:
        raise InvalidInput("the file has no rows; send a CSV/TSV file with data")
    header = options.header if options.header != "auto" else looks_like_header(sample[0], sample[1:])
    check_columns(len(sample[0]), limits)
    try:
        reader = pd.read_csv(
            io.BytesIO(content),
            sep=delimiter,
            encoding=encoding,
            header=0 if header else None,
            skiprows=options.skip_rows or None,
            decimal=options.decimal,
            thousands=options.thousands,
            skip_blank_lines=True,
            chunksize=CHUNK_ROWS,
            engine="c",
            on_bad_lines="error",
        )
        chunks: list[pd.DataFrame] = []
        rows = 0
        with reader:
            for chunk in reader:
                rows += len(chunk)
                check_rows(rows, limits)
                chunks.append(chunk)
    except pd.errors.EmptyDataError:
        raise InvalidInput("the file has no rows; send a CSV/TSV file with data") from None
    except pd.errors.ParserError as error:
        raise InvalidInput(_parser_problem(str(error), delimiter)) from None
    except _DECODE_ERRORS:
        raise InvalidInput(
            f"the file is not valid {encoding} text; set options.encoding (e.g. latin-1, cp1252)"
        ) from None
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    if frame.empty:
        raise InvalidInput("the file has a header but no data rows")
    check_columns(frame.shape[1], limits)
    frame.columns = column_names(list(frame.columns) if header else None, frame.shape[1])
    frame = infer_types(frame, date_columns=options.date_columns, dayfirst=options.dayfirst)
    details = {"encoding": encoding, "delimiter": delimiter, "header": bool(header)}
    return frame, details


def _decoded_bytes(content: bytes, encoding: str | None) -> tuple[bytes, str]:
    """The bytes pandas will read and their encoding: a UTF-16 file is re-encoded as UTF-8 first."""
    if encoding is None and content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    if encoding is not None and encoding.startswith(("utf-16", "utf-32")):
        try:
            return content.decode(encoding).encode("utf-8"), "utf-8"
        except _DECODE_ERRORS:
            raise InvalidInput(f"the file is not valid {encoding} text; check options.encoding") from None
    if encoding is not None:
        _check_decodes(content, encoding)
        return content, encoding
    if content.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    else:
        encoding = "utf-8"
    try:
        codecs.decode(content, encoding)  # validates the whole file (fast, C) before choosing it
    except UnicodeDecodeError:
        return content, "latin-1"
    return content, encoding


def _check_decodes(content: bytes, encoding: str) -> None:
    """Refuse, in one line, a file the chosen encoding cannot decode (read piece by piece, nothing kept)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
        for start in range(0, len(content), _DECODE_PIECE_BYTES):
            decoder.decode(content[start : start + _DECODE_PIECE_BYTES])
        decoder.decode(b"", final=True)
    except _DECODE_ERRORS:
        raise InvalidInput(
            f"the file is not valid {encoding} text; set options.encoding to its real encoding "
            "(e.g. utf-8, latin-1, cp1252) or leave it out to detect it"
        ) from None


def _sample_lines(content: bytes, encoding: str, skip: int) -> list[str]:
    head = content[:_SAMPLE_BYTES]
    try:
        text = head.decode(encoding, errors="ignore")
    except _DECODE_ERRORS:  # codecs such as idna take no error handler
        raise InvalidInput(
            f"the file cannot be read as {encoding} text; set options.encoding to a text encoding "
            "such as utf-8, latin-1 or cp1252"
        ) from None
    lines = text.splitlines()
    if len(content) > _SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a cut sample is partial
    return lines[skip : skip + _SAMPLE_LINES]


def _detect_delimiter(lines: list[str]) -> str:
    """The candidate that splits the sample lines into the same number (> 1) of fields most often."""
    best, best_score = ",", (0.0, 0)
    for candidate in _CANDIDATES:
        counts = [len(row) for row in csv.reader(lines, delimiter=candidate) if row]
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        score = (counts.count(mode) / len(counts), mode)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _parser_problem(message: str, delimiter: str) -> str:
    shown = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(delimiter, repr(delimiter))
    found = _FIELDS.search(message)
    if found:
        expected, line, saw = found.groups()
        return (
            f"inconsistent columns: line {line} has {saw} fields but the rows before it have {expected} "
            f"(delimiter: {shown}); fix the file or set options.delimiter"
        )
    first = message.strip().splitlines()[0][:120] if message.strip() else "unreadable"
    return f"the file could not be read as {shown}-separated text ({first}); check the delimiter and quoting"
