"""File import, pure parsing: the bytes of a CSV/TSV, xlsx or PDF file in, a typed pandas DataFrame out.

No I/O, no MCP, no sessions: the tool in mcp_server/tools/imports.py reads the file and stores the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from importers.delimited import parse_delimited
from importers.detect import Format, Requested, resolve_format
from importers.excel import parse_xlsx
from importers.limits import Limits, check_size
from importers.options import ImportOptions
from importers.pdf import parse_pdf

__all__ = ["ImportOptions", "Imported", "Limits", "parse_file"]


@dataclass
class Imported:
    frame: pd.DataFrame
    format: Format
    details: dict[str, Any] = field(default_factory=dict)  # delimiter, encoding, sheet, pages, ...


def parse_file(
    content: bytes,
    format: Requested = "auto",
    options: ImportOptions | None = None,
    limits: Limits | None = None,
) -> Imported:
    """Parse `content`; raises InvalidInput with one line naming the problem and the fix."""
    options = options or ImportOptions()
    limits = limits or Limits()
    check_size(len(content), limits)
    resolved = resolve_format(content, format)
    if resolved == "pdf":
        frame, details = parse_pdf(content, options, limits)
    elif resolved == "xlsx":
        frame, details = parse_xlsx(content, options, limits)
    else:
        frame, details = parse_delimited(
            content, options, limits, delimiter="\t" if resolved == "tsv" else None
        )
    return Imported(frame, resolved, details)
