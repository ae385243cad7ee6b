"""Which format a file is, from its bytes: PDF by its %PDF marker, xlsx as a zip holding xl/workbook.xml,
else text (CSV/TSV) unless it looks binary."""

from __future__ import annotations

import io
import zipfile
from typing import Literal

from core.errors import InvalidInput

Format = Literal["csv", "tsv", "xlsx", "pdf"]
Requested = Literal["auto", "csv", "tsv", "xlsx", "pdf"]
Kind = Literal["pdf", "xlsx", "text"]

_SAMPLE = 65_536
# Text files have tabs and line breaks but (almost) no other C0 control bytes; binary data has many.
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13)) + b"\x7f"
_MAX_CONTROL_SHARE = 0.005
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def sniff(content: bytes) -> Kind:
    """The kind of file `content` is; raises InvalidInput for binary data that is none of the supported ones."""
    head = content[:1024]
    if b"%PDF-" in head:  # the spec lets the marker sit anywhere in the first 1024 bytes
        return "pdf"
    if content.startswith(b"PK\x03\x04") or content.startswith(b"PK\x05\x06"):
        if _is_xlsx(content):
            return "xlsx"
        raise InvalidInput(
            "the file is a zip archive but not an xlsx workbook; send CSV, TSV, xlsx or PDF "
            "(save .xls/.ods files as .xlsx)"
        )
    if content.startswith(b"\xd0\xcf\x11\xe0"):
        raise InvalidInput("the file is a legacy .xls workbook; save it as .xlsx or CSV and import that")
    if content.startswith(_UTF16_BOMS):
        return "text"
    sample = content[:_SAMPLE]
    controls = sum(sample.count(bytes([b])) for b in _CONTROL)
    if b"\x00" in sample or controls > _MAX_CONTROL_SHARE * len(sample):
        raise InvalidInput(
            "the file is binary data, not CSV/TSV text, an xlsx workbook or a PDF; check the file"
        )
    return "text"


def _is_xlsx(content: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return "xl/workbook.xml" in names


def resolve_format(content: bytes, requested: Requested) -> Format:
    """The format to parse with: the detected one, or the requested one when the bytes agree with it."""
    kind = sniff(content)
    if requested == "auto":
        return "csv" if kind == "text" else kind
    wanted_kind = "text" if requested in ("csv", "tsv") else requested
    if wanted_kind != kind:
        described = {"pdf": "a PDF", "xlsx": "an xlsx workbook", "text": "text"}
        raise InvalidInput(
            f"format '{requested}' was asked but the file is not {described[wanted_kind]} (it is "
            f"{described[kind]}); use format='auto' or send the right file"
        )
    return requested
