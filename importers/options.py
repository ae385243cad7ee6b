"""The options an import takes, one pydantic model so agents see an exact JSON schema and typos are refused."""

from __future__ import annotations

import codecs
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_PAGES = re.compile(r"^\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*$")


class ImportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delimiter: Annotated[
        str | None,
        Field(min_length=1, max_length=1, description="CSV/TSV field separator; default: detected"),
    ] = None
    encoding: Annotated[
        str | None,
        Field(max_length=40, description="text encoding; default: utf-8 (BOM honoured), else latin-1"),
    ] = None
    header: Annotated[
        bool | Literal["auto"],
        Field(description="is the first row (of each table) a header? default: detected"),
    ] = "auto"
    skip_rows: Annotated[int, Field(ge=0, le=1_000, description="CSV/xlsx lines to skip before the data")] = 0
    decimal: Annotated[Literal[".", ","], Field(description="CSV decimal mark")] = "."
    thousands: Annotated[
        Literal[",", ".", " ", "'"] | None, Field(description="CSV thousands separator inside numbers")
    ] = None
    date_columns: Annotated[
        list[Annotated[str, Field(max_length=200)]] | None,
        Field(max_length=200, description="columns that must parse as dates (others are detected)"),
    ] = None
    dayfirst: Annotated[bool, Field(description="read 01/02/2024 as 1 February (default: 2 January)")] = False
    sheet: Annotated[
        str | Annotated[int, Field(ge=1)] | None,
        Field(description="xlsx sheet by name or 1-based position; default: the first"),
    ] = None
    pages: Annotated[
        str | None, Field(max_length=200, description="PDF pages to read, e.g. '1-3,5'; default: all")
    ] = None
    table: Annotated[
        int | None, Field(ge=1, description="PDF: which table (1-based) when the pages hold several")
    ] = None
    table_strategy: Annotated[
        Literal["lines", "text"],
        Field(description="PDF: find tables by ruling lines (default) or by text alignment"),
    ] = "lines"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        shown = "".join(ch if ch.isprintable() else "?" for ch in value)
        try:
            codec = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding '{shown}'; use e.g. utf-8, latin-1, cp1252") from None
        # base64, zlib_codec, rot13, hex, ... are transforms of bytes or of text, not text encodings
        if not getattr(codec, "_is_text_encoding", True):
            raise ValueError(f"'{shown}' is not a text encoding; use e.g. utf-8, latin-1, cp1252")
        return codec.name

    @field_validator("pages")
    @classmethod
    def _page_list(cls, value: str | None) -> str | None:
        if value is not None and not _PAGES.match(value):
            raise ValueError("pages must look like '1-3,5'")
        return value

    @field_validator("delimiter")
    @classmethod
    def _printable_delimiter(cls, value: str | None) -> str | None:
        if value is not None and (value in '\r\n"' or (not value.isprintable() and value != "\t")):
            raise ValueError("delimiter must be one printable character or a tab")
        return value
