"""xlsx workbooks through openpyxl (read-only, cached formula values): one sheet, chosen by name or position."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pandas as pd
from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from core.errors import InvalidInput
from importers.columns import column_names, infer_types, looks_like_header
from importers.limits import Limits, check_columns, check_rows, check_xlsx_archive
from importers.options import ImportOptions


def parse_xlsx(content: bytes, options: ImportOptions, limits: Limits) -> tuple[pd.DataFrame, dict[str, Any]]:
    check_xlsx_archive(content, limits)  # before openpyxl decompresses anything
    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError):
        raise InvalidInput(
            "the file is not a readable xlsx workbook; open and save it again in Excel"
        ) from None
    try:
        sheet = _chosen_sheet(workbook, options.sheet)
        rows = _sheet_rows(sheet, options.skip_rows, limits)
        names = list(workbook.sheetnames)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError, EOFError):
        raise InvalidInput("the xlsx workbook is damaged; open and save it again in Excel") from None
    finally:
        workbook.close()
    if not rows:
        raise InvalidInput(
            f"sheet '{sheet.title}' is empty; choose another with options.sheet ({', '.join(names)})"
        )
    header = options.header if options.header != "auto" else looks_like_header(rows[0], rows[1:])
    body = rows[1:] if header else rows
    if not body:
        raise InvalidInput(
            f"sheet '{sheet.title}' has a header but no data rows; sheets: {', '.join(names)} (options.sheet)"
        )
    width = max(len(row) for row in rows)
    frame = pd.DataFrame(
        [list(row) + [None] * (width - len(row)) for row in body],
        columns=column_names(rows[0] if header else None, width),
    )
    frame = infer_types(frame, date_columns=options.date_columns, dayfirst=options.dayfirst)
    return frame, {"sheet": sheet.title, "sheets": names, "header": bool(header)}


def _chosen_sheet(workbook: Any, choice: str | int | None) -> Any:
    sheets = workbook.worksheets
    if not sheets:
        raise InvalidInput("the workbook has no worksheets")
    listed = ", ".join(f"'{s.title}'" for s in sheets[:30])
    if choice is None:
        return sheets[0]
    if isinstance(choice, int):
        if choice > len(sheets):
            raise InvalidInput(f"sheet {choice} does not exist; the workbook has {len(sheets)}: {listed}")
        return sheets[choice - 1]
    for sheet in sheets:
        if sheet.title == choice:
            return sheet
    raise InvalidInput(f"sheet '{choice[:60]}' does not exist; sheets: {listed}")


def _sheet_rows(sheet: Any, skip: int, limits: Limits) -> list[tuple[Any, ...]]:
    """Non-empty rows with trailing empty cells cut, stopping as soon as the row cap is passed."""
    rows: list[tuple[Any, ...]] = []
    for position, row in enumerate(sheet.iter_rows(values_only=True)):
        if position < skip:
            continue
        cells = list(row)
        while cells and (cells[-1] is None or (isinstance(cells[-1], str) and not cells[-1].strip())):
            cells.pop()
        if not cells:
            continue
        check_columns(len(cells), limits)
        rows.append(tuple(cells))
        check_rows(len(rows) - 1, limits)  # the first row may be the header
    return rows
