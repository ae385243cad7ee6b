"""Size, row and page caps for imports, and the zip-bomb check an xlsx passes before openpyxl opens it."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from core.errors import InvalidInput

# Members smaller than this cannot hurt whatever their ratio (tiny XML parts compress very well).
_RATIO_FLOOR_BYTES = 1_000_000
# Real xlsx parts never carry a DTD; one with entity declarations is an XML bomb attempt.
_XML_HEAD_BYTES = 4_096
_READ_BYTES = 1_048_576  # xlsx parts are inflated this much at a time while they are measured


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 100_000_000  # the file as received (decoded from base64 or read from disk)
    max_rows: int = 1_000_000
    max_columns: int = 1_000
    max_uncompressed_bytes: int = 1_000_000_000  # sum of an xlsx's declared member sizes
    max_stream_bytes: int = 50_000_000  # what one xlsx part or one PDF stream may inflate to
    max_compression_ratio: float = 200.0  # per xlsx member larger than 1 MB
    max_zip_members: int = 10_000
    max_pages: int = 200  # PDF pages read for tables


def check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise InvalidInput("the file is empty; send a CSV, TSV, xlsx or PDF file with data")
    if size > limits.max_bytes:
        raise InvalidInput(
            f"the file is {size:,} bytes, over the import limit of {limits.max_bytes:,}; "
            "split it or filter it first"
        )


def check_rows(rows: int, limits: Limits) -> None:
    if rows > limits.max_rows:
        raise InvalidInput(
            f"the file has more than {limits.max_rows:,} rows, the import limit; split it or filter it first"
        )


def check_columns(columns: int, limits: Limits) -> None:
    if columns > limits.max_columns:
        raise InvalidInput(
            f"the file has {columns:,} columns, over the import limit of {limits.max_columns:,}"
        )


def check_xlsx_archive(content: bytes, limits: Limits) -> None:
    """Refuse zip bombs: from the central directory first, then by inflating every part (without keeping
    it) and counting, so no part openpyxl reads can grow past max_stream_bytes whatever the directory says.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InvalidInput("the file is a damaged zip archive, not a readable xlsx workbook") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_zip_members:
            raise InvalidInput(
                f"the xlsx archive has {len(members):,} parts (limit {limits.max_zip_members:,}); "
                "it is not a normal workbook"
            )
        total = sum(member.file_size for member in members)
        if total > limits.max_uncompressed_bytes:
            raise InvalidInput(
                f"the xlsx would expand to {total:,} bytes (limit {limits.max_uncompressed_bytes:,}); "
                "refused as a possible zip bomb"
            )
        for member in members:
            if member.file_size > limits.max_stream_bytes:
                raise _part_too_large(member, limits)
            if member.file_size > _RATIO_FLOOR_BYTES:
                ratio = member.file_size / max(member.compress_size, 1)
                if ratio > limits.max_compression_ratio:
                    raise InvalidInput(
                        f"an xlsx part expands {ratio:,.0f} times (limit {limits.max_compression_ratio:,.0f}); "
                        "refused as a possible zip bomb"
                    )
        for member in members:
            if member.filename.endswith((".xml", ".rels")):
                try:
                    with archive.open(member) as part:
                        head = part.read(_XML_HEAD_BYTES)
                except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError):
                    raise InvalidInput("the xlsx archive is damaged; save the workbook again") from None
                if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
                    raise InvalidInput("the xlsx contains XML entity declarations; refused as unsafe")
        for member in members:
            if _inflated_size(archive, member, limits.max_stream_bytes) > limits.max_stream_bytes:
                raise _part_too_large(member, limits)


def _inflated_size(archive: zipfile.ZipFile, member: zipfile.ZipInfo, cap: int) -> int:
    """The bytes `member` really inflates to, counted up to just past `cap` (its CRC checked when read whole)."""
    size = 0
    try:
        with archive.open(member) as part:
            while size <= cap:
                piece = part.read(_READ_BYTES)
                if not piece:
                    break
                size += len(piece)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError, ValueError):
        raise InvalidInput("the xlsx archive is damaged; save the workbook again") from None
    return size


def _part_too_large(member: zipfile.ZipInfo, limits: Limits) -> InvalidInput:
    name = "".join(ch if ch.isprintable() else "?" for ch in member.filename[:80])
    return InvalidInput(
        f"xlsx part '{name}' inflates past {limits.max_stream_bytes:,} bytes (the import limit, "
        "IMPORT_MAX_STREAM_BYTES); refused as a possible zip bomb: save the sheet as CSV and import that"
    )
