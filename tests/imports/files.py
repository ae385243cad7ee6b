"""Fixture files built by the tests themselves: CSV by pandas, xlsx by openpyxl, PDF tables by reportlab."""

from __future__ import annotations

import datetime as dt
import functools
import io
import random
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle


def sample_frame(rows: int = 200, seed: int = 3) -> pd.DataFrame:
    """Columns of every type an import must keep: int, float with gaps, text, dates, booleans."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 1_000, rows)
    spend = np.round(20 + 0.05 * tenure + rng.normal(0, 8, rows), 2)
    quality = np.round(rng.uniform(1, 5, rows), 3)
    quality[::17] = np.nan
    return pd.DataFrame(
        {
            "customer": [f"C{i:05d}" for i in range(rows)],
            "tenure_days": tenure,
            "monthly_spend": spend,
            "quality": quality,
            "plan": rng.choice(["Basic", "Premium", "Enterprise"], rows),
            "joined": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, rows), unit="D"),
            "churned": rng.random(rows) < 0.2,
        }
    )


def csv_bytes(frame: pd.DataFrame, **options: Any) -> bytes:
    encoding = options.pop("encoding", "utf-8")
    return frame.to_csv(index=False, **options).encode(encoding)


def xlsx_bytes(sheets: dict[str, Sequence[Sequence[Any]]]) -> bytes:
    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def frame_rows(frame: pd.DataFrame) -> list[list[Any]]:
    """Header plus rows of Python values (dates as datetime, NaN as None), as a spreadsheet holds them."""
    rows: list[list[Any]] = [list(frame.columns)]
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            if isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            elif isinstance(value, float) and np.isnan(value):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            cells.append(value)
        rows.append(cells)
    return rows


def pdf_bytes(
    *tables: Sequence[Sequence[str]], repeat_header: bool = True, page_break: bool = False
) -> bytes:
    """A PDF with a title and the given tables (first row of each is its header), grid lines drawn."""
    buffer = io.BytesIO()
    story: list[Any] = [Paragraph("Quarterly report", getSampleStyleSheet()["Title"])]
    for position, rows in enumerate(tables):
        if position and page_break:
            story.append(PageBreak())
        table = Table([list(r) for r in rows], repeatRows=1 if repeat_header else 0)
        table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
        story += [table, Spacer(1, 24)]
    SimpleDocTemplate(buffer, pagesize=A4).build(story)
    return buffer.getvalue()


def text_only_pdf() -> bytes:
    buffer = io.BytesIO()
    styles = getSampleStyleSheet()
    story = [Paragraph("Minutes of the meeting", styles["Title"])]
    story += [Paragraph(f"Point {i}: nothing tabular was discussed.", styles["Normal"]) for i in range(5)]
    SimpleDocTemplate(buffer, pagesize=A4).build(story)
    return buffer.getvalue()


def revenue_table(rows: int) -> list[list[str]]:
    """Header + rows, long enough at 60+ rows to run over a page break."""
    table = [["region", "month", "revenue", "customers"]]
    for i in range(rows):
        month = dt.date(2024, 1 + i % 12, 1).isoformat()
        table.append([f"R{i % 4}", month, f"{1000 + i * 7.25:,.2f}", str(100 + i)])
    return table


def zip_bomb_xlsx(expanded_mb: int = 40) -> bytes:
    """A zip shaped like an xlsx whose sheet part inflates about a thousand times."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            block = b"\0" * 1_000_000
            for _ in range(expanded_mb):
                part.write(block)
    return buffer.getvalue()


def with_entity_declaration(xlsx: bytes) -> bytes:
    """The same workbook with a DTD (the start of a billion-laughs bomb) in its workbook part."""
    source = zipfile.ZipFile(io.BytesIO(xlsx))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/workbook.xml":
                data = b'<!DOCTYPE workbook [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>' + data
            target.writestr(item, data)
    return buffer.getvalue()


def deflated_zeros(size: int) -> bytes:
    """A zlib stream that inflates to `size` zero bytes, about size / 1,000 bytes long, built without
    holding `size` bytes: one fully flushed deflate block of zeros repeated (each needs no earlier data)."""
    block_bytes = 1_048_576
    assert size % block_bytes == 0
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib frame is written here
    block = deflater.compress(b"\0" * block_bytes) + deflater.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty last block ends the stream
    adler = (size % 65_521) << 16 | 1  # Adler-32 of zeros: a stays 1, b counts the bytes
    return b"\x78\xda" + block * (size // block_bytes) + final + adler.to_bytes(4, "big")


def pdf_with_content_stream(stream: bytes, filters: str = "/FlateDecode") -> bytes:
    """A one-page PDF, written byte by byte with a correct xref table, whose page content is `stream`."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << >> >>",
        b"<< /Length %d /Filter %s >>\nstream\n" % (len(stream), filters.encode()) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@functools.cache
def pdf_bomb(inflated: int = 1_073_741_824) -> bytes:
    """Under 1.1 MB of PDF whose page content stream inflates to `inflated` bytes (1 GiB by default)."""
    return pdf_with_content_stream(deflated_zeros(inflated))


@functools.cache
def xlsx_part_bomb(inflated_mb: int = 200) -> bytes:
    """An xlsx-shaped zip whose sheet part inflates about 110 times (under the 200 ratio check) to
    `inflated_mb` MiB: only an absolute cap on what a part inflates to refuses it."""
    rng = random.Random(7)
    piece = bytearray(b" " * 1_048_576)
    for position in range(0, len(piece), 400):
        piece[position] = rng.randrange(33, 127)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            for _ in range(inflated_mb):
                part.write(piece)
    return buffer.getvalue()
