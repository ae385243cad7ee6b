"""The pure importers: bytes in, a typed DataFrame out, and one clear line for every bad file."""

from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np
import pandas as pd
import pydantic
import pytest

import importers.delimited
import importers.excel
from core.errors import InvalidInput
from importers import ImportOptions, Limits, parse_file
from tests.imports.files import (
    csv_bytes,
    deflated_zeros,
    frame_rows,
    pdf_bomb,
    pdf_bytes,
    pdf_with_content_stream,
    revenue_table,
    sample_frame,
    text_only_pdf,
    with_entity_declaration,
    xlsx_bytes,
    xlsx_part_bomb,
    zip_bomb_xlsx,
)


def assert_same_frame(imported: pd.DataFrame, original: pd.DataFrame) -> None:
    assert list(imported.columns) == list(original.columns)
    for name in original.columns:
        got, want = imported[name], original[name]
        if pd.api.types.is_datetime64_any_dtype(want.dtype):
            assert pd.api.types.is_datetime64_any_dtype(got.dtype), name
            assert (got.to_numpy("datetime64[s]") == want.to_numpy("datetime64[s]")).all(), name
        elif pd.api.types.is_float_dtype(want.dtype):
            assert pd.api.types.is_float_dtype(got.dtype), name
            np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), equal_nan=True)
        elif pd.api.types.is_bool_dtype(want.dtype):
            assert pd.api.types.is_bool_dtype(got.dtype), name
            assert got.tolist() == want.tolist(), name
        elif pd.api.types.is_integer_dtype(want.dtype):
            assert pd.api.types.is_integer_dtype(got.dtype), name
            assert got.tolist() == want.tolist(), name
        else:
            assert pd.api.types.is_string_dtype(got.dtype), name
            assert got.tolist() == want.tolist(), name


def refused(content: bytes, **arguments: object) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_file(content, **arguments)  # type: ignore[arg-type]
    message = caught.value.message
    assert "\n" not in message and len(message) < 400
    return message


# CSV / TSV


def test_csv_written_by_pandas_round_trips_values_and_types() -> None:
    original = sample_frame()
    imported = parse_file(csv_bytes(original))
    assert imported.format == "csv"
    assert imported.details == {"encoding": "utf-8", "delimiter": ",", "header": True}
    assert_same_frame(imported.frame, original)


@pytest.mark.parametrize(
    ("separator", "requested"), [("\t", "auto"), ("\t", "tsv"), (";", "auto"), ("|", "csv")]
)
def test_tab_semicolon_and_pipe_delimiters_are_detected(separator: str, requested: str) -> None:
    original = sample_frame(50)
    imported = parse_file(csv_bytes(original, sep=separator), format=requested)  # type: ignore[arg-type]
    assert imported.details["delimiter"] == separator
    assert_same_frame(imported.frame, original)


def test_a_file_without_header_row_gets_numbered_column_names() -> None:
    original = sample_frame(30)
    imported = parse_file(csv_bytes(original, header=False))
    assert imported.details["header"] is False
    assert list(imported.frame.columns) == [f"column_{i}" for i in range(1, 8)]
    assert imported.frame["column_2"].tolist() == original["tenure_days"].tolist()


def test_header_choice_can_be_forced() -> None:
    content = b"a,b\nc,d\ne,f\n"
    assert list(parse_file(content).frame.columns) == ["a", "b"]
    forced = parse_file(content, options=ImportOptions(header=False)).frame
    assert forced["column_1"].tolist() == ["a", "c", "e"]


def test_latin1_text_falls_back_from_utf8_and_a_bom_is_not_part_of_the_first_name() -> None:
    frame = pd.DataFrame(
        {"ville": ["Besançon", "Orléans", "Nîmes"], "habitants": [116_000, 116_500, 148_000]}
    )
    latin = parse_file(csv_bytes(frame, encoding="latin-1"))
    assert latin.details["encoding"] == "latin-1"
    assert latin.frame["ville"].tolist() == ["Besançon", "Orléans", "Nîmes"]
    bom = parse_file(csv_bytes(frame, encoding="utf-8-sig"))
    assert bom.details["encoding"] == "utf-8-sig"
    assert list(bom.frame.columns) == ["ville", "habitants"]
    utf16 = parse_file(csv_bytes(frame, sep="\t", encoding="utf-16"))
    assert utf16.frame["ville"].tolist() == frame["ville"].tolist()


def test_dates_in_slash_form_parse_month_first_or_day_first_as_asked() -> None:
    content = b"day,amount\n03/04/2024,1.5\n13/04/2024,2.5\n"
    day_first = parse_file(content, options=ImportOptions(dayfirst=True)).frame
    assert day_first["day"].dt.month.tolist() == [4, 4]
    # 13/04 cannot be month-first, so month-first falls through to the day-first form
    fallback = parse_file(content).frame
    assert fallback["day"].dt.day.tolist() == [3, 13]
    us = parse_file(b"day,amount\n03/04/2024,1\n04/05/2024,2\n").frame
    assert us["day"].dt.month.tolist() == [3, 4]


def test_named_date_columns_must_parse() -> None:
    message = refused(b"code,amount\nA1,1\nB2,2\n", options=ImportOptions(date_columns=["code"]))
    assert "column 'code'" in message and "not dates" in message
    assert "not in the file" in refused(b"a,b\n1,2\n", options=ImportOptions(date_columns=["when"]))


def test_iso_dates_parse_as_pandas_does_and_an_impossible_day_past_the_sample_is_not_rolled_over() -> None:
    days = pd.date_range("2019-01-01", periods=3_000, freq="D").strftime("%Y-%m-%d").tolist()
    good = parse_file(("when,n\n" + "".join(f"{d},{i}\n" for i, d in enumerate(days))).encode()).frame
    assert (good["when"] == pd.to_datetime(pd.Series(days), format="%Y-%m-%d")).all()
    days[2_500] = "2023-02-30"  # beyond the 1,000-row sample; a lenient parser would make it 1 March
    bad = parse_file(("when,n\n" + "".join(f"{d},{i}\n" for i, d in enumerate(days))).encode()).frame
    assert pd.api.types.is_string_dtype(bad["when"].dtype) and bad["when"][2_500] == "2023-02-30"


def test_thousands_separators_and_decimal_commas() -> None:
    content = b'item;price\n"a";"1.234,50"\n"b";"2,00"\n'
    frame = parse_file(content, options=ImportOptions(decimal=",", thousands=".")).frame
    assert frame["price"].tolist() == [1234.5, 2.0]
    quoted = parse_file(b'item,price\na,"1,234.50"\nb,"12.00"\n').frame
    assert quoted["price"].tolist() == [1234.5, 12.0]


def test_a_large_csv_is_read_in_chunks_and_keeps_one_type_per_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importers.delimited, "CHUNK_ROWS", 40)
    original = sample_frame(170)
    original.loc[150:, "tenure_days"] = 5  # same type, later chunk
    text = original.copy()
    text.loc[120:, "plan"] = "12"  # a chunk of numbers-looking text in a text column stays text
    imported = parse_file(csv_bytes(text)).frame
    assert len(imported) == 170
    assert_same_frame(imported.drop(columns="plan"), text.drop(columns="plan"))
    assert imported["plan"].tolist() == text["plan"].tolist()


def test_the_row_cap_refuses_a_file_that_is_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importers.delimited, "CHUNK_ROWS", 25)
    message = refused(csv_bytes(sample_frame(120)), limits=Limits(max_rows=100))
    assert "more than 100 rows" in message


def test_the_size_and_column_caps_refuse_with_the_limit_named() -> None:
    assert "over the import limit of 1,000" in refused(
        b"a,b\n" + b"1,2\n" * 500, limits=Limits(max_bytes=1_000)
    )
    wide = ",".join(f"c{i}" for i in range(30)).encode() + b"\n" + b",".join(b"1" for _ in range(30)) + b"\n"
    assert "30 columns" in refused(wide, limits=Limits(max_columns=20))
    assert "empty" in refused(b"")


def test_a_row_with_more_fields_than_the_header_is_refused_as_inconsistent_columns() -> None:
    message = refused(b"a,b,c\n1,2,3\n4,5,6\n7,8,9,10\n")
    assert message.startswith("inconsistent columns: line 4 has 4 fields")


def test_a_header_with_no_rows_is_refused() -> None:
    assert "no data rows" in refused(b"alpha,beta\n")
    assert "no rows" in refused(b"\n\n\n")


def test_binary_garbage_is_refused() -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 5_000, dtype=np.uint8).tobytes()
    assert "binary data" in refused(garbage)
    assert "binary data" in refused(b"a,b\n1,2\n\x00\x01\x02\x03" * 20)
    assert "legacy .xls" in refused(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 500)


# xlsx


def test_xlsx_written_by_openpyxl_round_trips_values_and_types_on_the_chosen_sheet() -> None:
    original = sample_frame(80)
    content = xlsx_bytes({"Notes": [["prepared by", "finance"]], "Customers": frame_rows(original)})
    by_name = parse_file(content, options=ImportOptions(sheet="Customers"))
    assert by_name.format == "xlsx" and by_name.details["sheet"] == "Customers"
    assert_same_frame(by_name.frame, original)
    by_position = parse_file(content, options=ImportOptions(sheet=2))
    assert_same_frame(by_position.frame, original)


def test_an_unknown_sheet_is_refused_with_the_sheet_names() -> None:
    content = xlsx_bytes({"Notes": [["a"], [1]], "Data": [["b"], [2]]})
    assert "sheets: 'Notes', 'Data'" in refused(content, options=ImportOptions(sheet="Dta"))
    assert "the workbook has 2" in refused(content, options=ImportOptions(sheet=3))


def test_an_xlsx_zip_bomb_is_refused_from_the_zip_directory_before_openpyxl_opens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("openpyxl must not open a zip bomb")

    monkeypatch.setattr(importers.excel, "load_workbook", never)
    bomb = zip_bomb_xlsx(40)
    assert len(bomb) < 200_000
    assert "possible zip bomb" in refused(bomb)
    assert "possible zip bomb" in refused(bomb, limits=Limits(max_uncompressed_bytes=10_000_000))


def test_an_xlsx_with_xml_entity_declarations_is_refused() -> None:
    content = with_entity_declaration(xlsx_bytes({"Data": [["a"], [1]]}))
    assert "entity declarations" in refused(content)


def test_a_zip_that_is_not_a_workbook_and_a_format_mismatch_are_refused() -> None:
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert "not an xlsx workbook" in refused(buffer.getvalue())
    assert "format 'xlsx' was asked but the file is not an xlsx workbook (it is text)" in refused(
        b"a,b\n1,2\n", format="xlsx"
    )


# PDF


def test_a_pdf_table_spanning_pages_is_joined_with_values_and_types_kept() -> None:
    table = revenue_table(90)
    for repeat in (True, False):
        imported = parse_file(pdf_bytes(table, repeat_header=repeat))
        assert imported.format == "pdf"
        assert len(imported.details["pages"]) >= 2, "the fixture must run over a page break"
        frame = imported.frame
        assert list(frame.columns) == table[0]
        assert len(frame) == 90
        assert frame["region"].tolist() == [row[0] for row in table[1:]]
        assert pd.api.types.is_datetime64_any_dtype(frame["month"].dtype)
        assert frame["month"].dt.strftime("%Y-%m-%d").tolist() == [row[1] for row in table[1:]]
        assert frame["revenue"].tolist() == [float(row[2].replace(",", "")) for row in table[1:]]
        assert frame["customers"].dtype == np.int64
        assert frame["customers"].tolist() == [int(row[3]) for row in table[1:]]


def test_pdf_tables_with_different_columns_must_be_chosen() -> None:
    people = [["name", "age"], ["Ann", "34"], ["Bob", "51"]]
    content = pdf_bytes(revenue_table(5), people, page_break=True)
    message = refused(content)
    assert "2 tables with different columns" in message and "options.table" in message
    second = parse_file(content, options=ImportOptions(table=2))
    assert second.frame.to_dict("list") == {"name": ["Ann", "Bob"], "age": [34, 51]}
    assert second.details["pages"] == [2]
    only_page_two = parse_file(content, options=ImportOptions(pages="2"))
    assert only_page_two.frame["name"].tolist() == ["Ann", "Bob"]
    assert "pages '3'" in refused(content, options=ImportOptions(pages="3"))


def test_a_pdf_without_tables_and_a_file_that_is_not_a_pdf_are_refused() -> None:
    assert "no tables found on page(s) 1" in refused(text_only_pdf())
    assert "format 'pdf' was asked but the file is not a PDF (it is text)" in refused(
        b"a,b\n1,2\n", format="pdf"
    )
    assert "not a readable PDF" in refused(b"%PDF-1.7\n" + b"garbage " * 200)


# Decompression bombs and encodings


def test_a_pdf_whose_content_stream_inflates_to_1_gib_is_refused_before_it_is_inflated() -> None:
    bomb = pdf_bomb()
    assert len(bomb) < 1_100_000
    message = refused(bomb)
    assert message.startswith("a stream of page 1 inflates past 50,000,000 bytes")
    assert "decompression bomb" in message
    assert "past 1,000,000 bytes" in refused(bomb, limits=Limits(max_stream_bytes=1_000_000))


def test_a_pdf_stream_behind_two_flate_filters_is_measured_through_both() -> None:
    double = zlib.compress(deflated_zeros(64 * 1_048_576))  # 64 MiB of zeros, deflated twice: ~1 KB
    assert len(double) < 100_000
    content = pdf_with_content_stream(double, "[/FlateDecode /FlateDecode]")
    assert "inflates past 50,000,000 bytes" in refused(content)


def test_the_streams_of_a_pdf_together_are_capped_by_the_import_size() -> None:
    content = pdf_with_content_stream(deflated_zeros(2 * 1_048_576))
    message = refused(content, limits=Limits(max_bytes=1_000_000))
    assert message.startswith("the PDF's streams inflate past 1,000,000 bytes in all (by page 1")
    assert "options.pages" in message


def test_a_pdf_stream_with_a_broken_checksum_is_still_read_as_pdfminer_reads_it() -> None:
    table = pdf_bytes(revenue_table(10))
    stream = zlib.compress(b"0 0 m 10 10 l S\n" * 10)
    broken = stream[:-4] + bytes(4)  # pdfminer keeps what inflates before a bad Adler-32
    assert "no tables found on page(s) 1" in refused(pdf_with_content_stream(broken))
    assert len(parse_file(table, limits=Limits(max_stream_bytes=100_000)).frame) == 10


def test_an_xlsx_part_inflating_past_the_cap_under_the_ratio_limit_is_refused_before_openpyxl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("openpyxl must not open a zip bomb")

    monkeypatch.setattr(importers.excel, "load_workbook", never)
    bomb = xlsx_part_bomb(200)
    part = zipfile.ZipFile(io.BytesIO(bomb)).getinfo("xl/worksheets/sheet1.xml")
    assert part.file_size / part.compress_size < Limits().max_compression_ratio
    message = refused(bomb)
    assert message.startswith("xlsx part 'xl/worksheets/sheet1.xml' inflates past 50,000,000 bytes")
    assert "possible zip bomb" in message


def test_an_xlsx_part_is_measured_by_what_it_really_inflates_to_not_only_its_declared_size() -> None:
    bomb = xlsx_part_bomb(3)
    assert "inflates past 2,000,000 bytes" in refused(bomb, limits=Limits(max_stream_bytes=2_000_000))
    # a directory that understates the part's size: the counted read stops and refuses it
    understated = bytearray(bomb)
    directory = understated.rfind(b"PK\x01\x02", 0, len(understated))
    while understated[directory + 46 : directory + 46 + 24] != b"xl/worksheets/sheet1.xml":
        directory = understated.rfind(b"PK\x01\x02", 0, directory)
    understated[directory + 24 : directory + 28] = (1_000).to_bytes(4, "little")  # uncompressed size
    message = refused(bytes(understated))
    assert message == "the xlsx archive is damaged; save the workbook again"


def test_ordinary_pdfs_and_workbooks_import_under_small_stream_caps() -> None:
    small = Limits(max_stream_bytes=200_000)
    pdf = parse_file(pdf_bytes(revenue_table(90)), limits=small)
    assert len(pdf.frame) == 90
    original = sample_frame(300)
    xlsx = parse_file(xlsx_bytes({"Data": frame_rows(original)}), limits=small)
    assert_same_frame(xlsx.frame, original)


@pytest.mark.parametrize("encoding", ["zlib_codec", "rot13", "base64", "hex", "bz2", "uu", "quopri"])
def test_a_codec_that_is_not_a_text_encoding_is_refused_as_an_option(encoding: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ImportOptions(encoding=encoding)
    assert f"'{encoding}' is not a text encoding" in str(caught.value)


@pytest.mark.parametrize("encoding", ["idna", "punycode", "undefined", "utf-7"])
def test_a_text_encoding_that_cannot_decode_the_file_is_refused_naming_it(encoding: str) -> None:
    content = b"name,city\nAnn,Orl\xe9ans\nBob,N\xeemes\n"
    message = refused(content, options=ImportOptions(encoding=encoding))
    assert f"not valid {encoding} text" in message or f"cannot be read as {encoding} text" in message
