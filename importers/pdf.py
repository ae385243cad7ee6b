"""Tables from PDF pages through pdfplumber: every table on the chosen pages, header rows detected, and a
table continued over several pages (same columns, header repeated or not) joined into one."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pdfplumber
from pdfminer.pdfparser import PDFSyntaxError
from pdfminer.psparser import PSException
from pdfplumber.utils.exceptions import PdfminerException

from core.errors import InvalidInput
from importers.columns import column_names, infer_types, looks_like_header
from importers.limits import Limits, check_columns, check_rows
from importers.options import ImportOptions
from importers.pdf_streams import StreamBudget, stream_budget

# pdfminer logs a warning for every odd object in a PDF; the import answers with its own errors.
logging.getLogger("pdfminer").setLevel(logging.ERROR)

_TEXT_SETTINGS = {"vertical_strategy": "text", "horizontal_strategy": "text"}
# What pdfplumber and pdfminer raise on a file they cannot read
_UNREADABLE = (
    PdfminerException,
    PDFSyntaxError,
    PSException,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
)


@dataclass
class _Table:
    """One logical table: its header (None when the rows start with data) and rows, maybe over pages."""

    header: list[str] | None
    width: int
    pages: list[int] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)


def parse_pdf(content: bytes, options: ImportOptions, limits: Limits) -> tuple[pd.DataFrame, dict[str, Any]]:
    # pdfplumber wraps every error it sees, ours too: the budget keeps its refusal to raise it unwrapped
    with stream_budget(limits.max_stream_bytes, limits.max_bytes) as budget:
        try:
            document = pdfplumber.open(io.BytesIO(content))
        except _UNREADABLE:
            raise budget.refusal or InvalidInput(
                "the file is not a readable PDF; check that it opens in a PDF viewer"
            ) from None
        try:
            with document:
                page_count = len(document.pages)
                chosen = _chosen_pages(options.pages, page_count, limits)
                tables = _tables(document, chosen, options, limits, budget)
        except InvalidInput:
            raise
        except _UNREADABLE:
            raise budget.refusal or InvalidInput(
                "the PDF is damaged and its pages cannot be read; save it again and retry"
            ) from None
        if budget.refusal is not None:  # pdfminer recovered from it and read on without the stream
            raise budget.refusal
    pages_text = _page_ranges(chosen)
    if not tables:
        hint = "" if options.table_strategy == "text" else ", or try options.table_strategy='text'"
        raise InvalidInput(
            f"no tables found on page(s) {pages_text} of the PDF; tables need ruling lines{hint}"
        )
    table = _chosen_table(tables, options.table)
    frame = pd.DataFrame(table.rows, columns=column_names(table.header, table.width))
    frame = infer_types(frame, date_columns=options.date_columns, dayfirst=options.dayfirst)
    details = {
        "pages": table.pages,
        "tables_found": len(tables),
        "table": tables.index(table) + 1,
        "header": table.header is not None,
    }
    return frame, details


def _chosen_pages(spec: str | None, page_count: int, limits: Limits) -> list[int]:
    if page_count == 0:
        raise InvalidInput("the PDF has no pages")
    if spec is None:
        if page_count > limits.max_pages:
            raise InvalidInput(
                f"the PDF has {page_count:,} pages; choose at most {limits.max_pages} with options.pages, e.g. '1-20'"
            )
        return list(range(1, page_count + 1))
    pages: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if first < 1 or last > page_count or first > last:
            raise InvalidInput(f"pages '{spec}' do not fit the PDF, which has pages 1-{page_count}")
        pages.extend(p for p in range(first, last + 1) if p not in pages)
        if len(pages) > limits.max_pages:
            raise InvalidInput(f"choose at most {limits.max_pages} pages at a time with options.pages")
    return sorted(pages)


def _tables(
    document: Any, pages: list[int], options: ImportOptions, limits: Limits, budget: StreamBudget
) -> list[_Table]:
    """Every table on the pages, a table continuing the previous one (same columns) joined to it."""
    settings = _TEXT_SETTINGS if options.table_strategy == "text" else None
    tables: list[_Table] = []
    rows = 0
    for number in pages:
        budget.where = f"page {number}"
        page = document.pages[number - 1]
        for raw in page.extract_tables(settings):
            cells = [[_cell(v) for v in row] for row in raw]
            cells = [row for row in cells if any(v is not None for v in row)]
            if not cells:
                continue
            width = len(cells[0])
            if any(len(row) != width for row in cells):
                raise InvalidInput(
                    f"a table on page {number} has rows with different numbers of columns; "
                    "the PDF table cannot be read reliably"
                )
            check_columns(width, limits)
            if options.header == "auto":
                header = looks_like_header(cells[0], cells[1:]) if len(cells) > 1 else False
            else:
                header = options.header
            names = [v or "" for v in cells[0]] if header else None
            body = cells[1:] if header else cells
            previous = tables[-1] if tables else None
            continues = (
                previous is not None
                and previous.width == width
                and previous.pages[-1] in (number, number - 1)
                and (names is None or names == previous.header)
            )
            if continues and previous is not None:
                if number not in previous.pages:
                    previous.pages.append(number)
                previous.rows.extend(body)
            else:
                tables.append(_Table(names, width, [number], list(body)))
            rows += len(body)
            check_rows(rows, limits)
        page.close()  # frees the page's parsed objects: long PDFs stay within memory
    return [t for t in tables if t.rows]


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _chosen_table(tables: list[_Table], choice: int | None) -> _Table:
    if choice is not None:
        if choice > len(tables):
            raise InvalidInput(f"table {choice} does not exist; the pages hold {len(tables)} table(s)")
        return tables[choice - 1]
    if len(tables) == 1:
        return tables[0]
    described = "; ".join(
        f"{n}: page {_page_ranges(t.pages)}, {t.width} columns"
        + (
            f" ({', '.join(h or '?' for h in t.header[:4])}{', ...' if t.width > 4 else ''})"
            if t.header
            else ""
        )
        for n, t in enumerate(tables[:8], start=1)
    )
    raise InvalidInput(
        f"the PDF holds {len(tables)} tables with different columns ({described}); choose one with options.table"
    )


def _page_ranges(pages: list[int]) -> str:
    parts: list[str] = []
    for page in pages:
        if parts and "-" not in parts[-1] and int(parts[-1]) == page - 1:
            parts[-1] = f"{parts[-1]}-{page}"
        elif parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == page - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{page}"
        else:
            parts.append(str(page))
    return ",".join(parts)
