"""import_file and describe_dataset through MCP, on real Redis: typed session datasets, refusals that store nothing."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastmcp import Client
from scipy import stats

from mcp_server.auth import Identity
from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.imports.conftest import IMPORT_MAX_BYTES
from tests.imports.files import (
    csv_bytes,
    frame_rows,
    pdf_bytes,
    revenue_table,
    sample_frame,
    text_only_pdf,
    xlsx_bytes,
    zip_bomb_xlsx,
)
from tests.support import call, refusal

ANALYST = Identity("analyst", "analyst", "-")


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


async def new_session(client: Client, **arguments: Any) -> str:
    return (await call(client, "session_create", data_source="imports", **arguments))["session_id"]


async def stored_keys(client: Client, session: str) -> list[str]:
    listing = await call(client, "session_list")
    entry = next(s for s in listing["sessions"] if s["session_id"] == session)
    return [item["key"] for item in entry["keys"]]


async def test_an_imported_csv_is_a_typed_session_dataset_equal_to_the_original(
    as_user: Callable[[str], Client], import_runtime: Runtime
) -> None:
    original = sample_frame(300)
    async with as_user("analyst") as client:
        session = await new_session(client)
        answer = await call(
            client,
            "import_file",
            session_id=session,
            dataset="customers_csv",
            content_base64=b64(csv_bytes(original)),
        )
        assert answer["rows"] == 300 and answer["dataset"] == "customers_csv"
        assert answer["source"]["format"] == "csv" and answer["source"]["delimiter"] == ","
        types = {c["name"]: c["type"] for c in answer["columns"]}
        assert types["tenure_days"] == "int64" and types["monthly_spend"] == "double"
        assert types["joined"].startswith("timestamp") and types["churned"] == "bool"
        assert types["customer"] in ("string", "large_string")
        assert answer["preview"][0]["customer"] == "C00000"
        read = await call(client, "session_read", session_id=session, key="customers_csv")
        assert read["value"]["rows"] == 300
    stored = await import_runtime.services.session_store.load_dataset(ANALYST, session, "customers_csv")
    assert stored["tenure_days"].tolist() == original["tenure_days"].tolist()
    np.testing.assert_allclose(stored["quality"], original["quality"], equal_nan=True)
    assert stored["plan"].tolist() == original["plan"].tolist()
    assert (stored["joined"].to_numpy("datetime64[s]") == original["joined"].to_numpy("datetime64[s]")).all()
    assert stored["churned"].tolist() == original["churned"].tolist()


async def test_an_xlsx_in_the_import_directory_is_imported_by_path_with_sheet_choice(
    as_user: Callable[[str], Client], import_runtime: Runtime, import_dir: Path
) -> None:
    original = sample_frame(60)
    (import_dir / "reports").mkdir(exist_ok=True)
    (import_dir / "reports" / "q1.xlsx").write_bytes(
        xlsx_bytes({"Cover": [["Q1 report"]], "Customers": frame_rows(original)})
    )
    async with as_user("analyst") as client:
        session = await new_session(client)
        answer = await call(
            client,
            "import_file",
            session_id=session,
            dataset="q1",
            path="reports/q1.xlsx",
            options={"sheet": "Customers"},
        )
        assert answer["source"]["from"] == "import_dir" and answer["source"]["file"] == "q1.xlsx"
        assert answer["source"]["sheet"] == "Customers" and answer["rows"] == 60
    stored = await import_runtime.services.session_store.load_dataset(ANALYST, session, "q1")
    assert stored["monthly_spend"].tolist() == original["monthly_spend"].tolist()
    assert (stored["joined"].to_numpy("datetime64[s]") == original["joined"].to_numpy("datetime64[s]")).all()


async def test_a_pdf_table_over_two_pages_becomes_one_dataset(
    as_user: Callable[[str], Client], import_runtime: Runtime
) -> None:
    table = revenue_table(70)
    async with as_user("analyst") as client:
        session = await new_session(client)
        answer = await call(
            client, "import_file", session_id=session, dataset="report", content_base64=b64(pdf_bytes(table))
        )
        assert answer["rows"] == 70 and len(answer["source"]["pages"]) == 2
    stored = await import_runtime.services.session_store.load_dataset(ANALYST, session, "report")
    assert stored["customers"].tolist() == [int(row[3]) for row in table[1:]]
    assert stored["revenue"].sum() == pytest.approx(sum(float(r[2].replace(",", "")) for r in table[1:]))


async def test_describe_dataset_matches_an_independent_computation(as_user: Callable[[str], Client]) -> None:
    original = sample_frame(250)
    async with as_user("analyst") as client:
        session = await new_session(client)
        await call(
            client, "import_file", session_id=session, dataset="d", content_base64=b64(csv_bytes(original))
        )
        described = await call(client, "describe_dataset", session_id=session, dataset="d")
    columns = {c["name"]: c for c in described["columns"]}
    assert described["rows"] == 250
    quality = original["quality"].to_numpy()
    present = quality[~np.isnan(quality)]
    assert columns["quality"]["type"] == "float"
    assert columns["quality"]["nulls"] == int(np.isnan(quality).sum())
    assert columns["quality"]["summary"]["mean"] == pytest.approx(present.mean())
    assert columns["quality"]["summary"]["std"] == pytest.approx(present.std(ddof=1))
    assert columns["quality"]["summary"]["median"] == pytest.approx(np.median(present))
    assert columns["tenure_days"]["type"] == "integer"
    assert columns["tenure_days"]["distinct"] == len(set(original["tenure_days"]))
    assert columns["plan"]["type"] == "string" and columns["plan"]["distinct"] == 3
    assert columns["joined"]["type"] == "datetime"
    assert columns["joined"]["summary"]["min"].startswith(str(original["joined"].min().date()))
    assert columns["churned"]["summary"]["true"] == int(original["churned"].sum())


async def test_a_correlation_on_an_imported_csv_equals_scipy(
    as_user: Callable[[str], Client], import_runtime: Runtime
) -> None:
    original = sample_frame(400)
    async with as_user("analyst") as client:
        if not any(tool.name == "analyze_data" for tool in await client.list_tools()):
            pytest.skip("analyze_data is not built yet")
        session = await new_session(client)
        await call(
            client, "import_file", session_id=session, dataset="d", content_base64=b64(csv_bytes(original))
        )
        answer = await call(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="correlation",
            parameters={"dataset": "d", "columns": ["tenure_days", "monthly_spend"]},
        )
    r, _ = stats.pearsonr(original["tenure_days"], original["monthly_spend"])
    assert answer["results"]["matrix"]["tenure_days"]["monthly_spend"] == pytest.approx(r, abs=1e-12)
    assert answer["metadata"]["row_count"] == 400


async def test_a_chart_from_an_imported_dataset_renders(as_user: Callable[[str], Client]) -> None:
    original = sample_frame(120)
    async with as_user("analyst") as client:
        session = await new_session(client)
        await call(
            client, "import_file", session_id=session, dataset="d", content_base64=b64(csv_bytes(original))
        )
        chart = await call(
            client,
            "create_visualization",
            data={"session_id": session, "dataset": "d"},
            chart_type="scatter",
            x_axis="tenure_days",
            y_axis="monthly_spend",
        )
        (content,) = await client.read_resource(chart["link"]["uri"])  # the chart travels by reference
    png = base64.b64decode(content.blob)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and chart["points"] == 120


BAD_FILES: dict[str, tuple[bytes, str, str]] = {
    "not a PDF": (
        b"name,age\nAnn,34\n",
        "pdf",
        "format 'pdf' was asked but the file is not a PDF (it is text)",
    ),
    "damaged PDF": (b"%PDF-1.4\n" + b"\x07garbage" * 100, "auto", "not a readable PDF"),
    "PDF with no tables": (text_only_pdf(), "auto", "no tables found"),
    "inconsistent columns": (b"a,b\n1,2\n3,4,5\n", "auto", "inconsistent columns"),
    "binary garbage": (os.urandom(4_000), "auto", "binary data"),
    "xlsx zip bomb": (zip_bomb_xlsx(40), "auto", "possible zip bomb"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
async def test_a_bad_file_is_refused_in_one_line_and_nothing_is_stored(
    as_user: Callable[[str], Client], case: str
) -> None:
    content, requested, expected = BAD_FILES[case]
    async with as_user("analyst") as client:
        session = await new_session(client)
        error = await refusal(
            client,
            "import_file",
            session_id=session,
            dataset="bad",
            content_base64=b64(content),
            format=requested,
        )
        assert expected in error
        assert await stored_keys(client, session) == []
        assert "not in session" in await refusal(client, "session_read", session_id=session, key="bad")


async def test_a_failed_import_leaves_an_existing_dataset_of_that_name_untouched(
    as_user: Callable[[str], Client], import_runtime: Runtime
) -> None:
    async with as_user("analyst") as client:
        session = await new_session(client)
        await call(
            client, "import_file", session_id=session, dataset="d", content_base64=b64(b"x,y\n1,2\n3,4\n")
        )
        await refusal(
            client, "import_file", session_id=session, dataset="d", content_base64=b64(b"x,y\n1,2\n3,4,5\n")
        )
    stored = await import_runtime.services.session_store.load_dataset(ANALYST, session, "d")
    assert stored.to_dict("list") == {"x": [1, 3], "y": [2, 4]}


@pytest.mark.parametrize(
    "path", ["../secret.csv", "reports/../../secret.csv", "SECRET_ABSOLUTE", "escape.csv", "."]
)
async def test_a_path_outside_the_import_directory_is_refused_and_nothing_is_stored(
    as_user: Callable[[str], Client], import_dir: Path, path: str
) -> None:
    secret = import_dir.parent / "secret.csv"
    secret.write_text("password,balance\nhunter2,100\n")
    escape = import_dir / "escape.csv"
    if not escape.is_symlink():
        escape.symlink_to(secret)
    path = str(secret) if path == "SECRET_ABSOLUTE" else path
    async with as_user("analyst") as client:
        session = await new_session(client)
        error = await refusal(client, "import_file", session_id=session, dataset="leak", path=path)
        assert "outside the import directory" in error
        assert str(import_dir) not in error and "hunter2" not in error
        assert await stored_keys(client, session) == []


async def test_a_symlink_that_stays_inside_the_import_directory_is_followed(
    as_user: Callable[[str], Client], import_dir: Path
) -> None:
    (import_dir / "real.csv").write_text("a,b\n1,2\n")
    link = import_dir / "alias.csv"
    if not link.is_symlink():
        link.symlink_to(import_dir / "real.csv")
    async with as_user("analyst") as client:
        session = await new_session(client)
        answer = await call(client, "import_file", session_id=session, dataset="d", path="alias.csv")
        assert answer["rows"] == 1 and answer["source"]["file"] == "real.csv"
        assert "no file 'missing.csv'" in await refusal(
            client, "import_file", session_id=session, dataset="d2", path="missing.csv"
        )
        (import_dir / "folder").mkdir(exist_ok=True)
        assert "not a regular file" in await refusal(
            client, "import_file", session_id=session, dataset="d2", path="folder"
        )


async def test_import_by_path_is_refused_when_no_import_directory_is_configured(
    connect: Callable[[str], Client],
) -> None:
    async with connect("analyst") as client:
        session = await new_session(client)
        error = await refusal(client, "import_file", session_id=session, dataset="d", path="data.csv")
        assert "IMPORT_DIR is not set" in error
        assert await stored_keys(client, session) == []


async def test_arguments_are_checked_before_any_work(as_user: Callable[[str], Client]) -> None:
    async with as_user("analyst") as client:
        session = await new_session(client)
        csv = b64(b"a,b\n1,2\n")
        assert "exactly one of content_base64" in await refusal(
            client, "import_file", session_id=session, dataset="d", content_base64=csv, path="x.csv"
        )
        assert "exactly one of content_base64" in await refusal(
            client, "import_file", session_id=session, dataset="d"
        )
        assert "not valid base64" in await refusal(
            client, "import_file", session_id=session, dataset="d", content_base64="not base64!!"
        )
        assert "not a valid key name" in await refusal(
            client, "import_file", session_id=session, dataset="../d", content_base64=csv
        )
        assert "options" in await refusal(
            client,
            "import_file",
            session_id=session,
            dataset="d",
            content_base64=csv,
            options={"delimter": ";"},
        )
        big = b64(b"a,b\n" + b"1,2\n" * (IMPORT_MAX_BYTES // 4 + 10))
        assert "over the import limit" in await refusal(
            client, "import_file", session_id=session, dataset="d", content_base64=big
        )
        assert await stored_keys(client, session) == []


async def test_an_upload_over_the_argument_limit_points_to_the_import_directory(make_runtime) -> None:
    async with make_runtime(customers=None, max_argument_bytes=20_000) as runtime:
        async with Client(app_for(runtime, "analyst").mcp) as client:
            session = await new_session(client)
            error = await refusal(
                client,
                "import_file",
                session_id=session,
                dataset="d",
                content_base64=b64(b"a,b\n" + b"1,2\n" * 6_000),
            )
            assert "MAX_ARGUMENT_BYTES" in error and "IMPORT_DIR and pass path" in error
            assert await stored_keys(client, session) == []


async def test_only_the_owner_or_a_write_grant_can_import_into_a_session(
    as_user: Callable[[str], Client],
) -> None:
    csv = b64(b"a,b\n1,2\n")
    async with as_user("analyst") as owner:
        session = await new_session(owner, user_id="analyst2", access_level="read")
        async with as_user("analyst2") as reader:
            error = await refusal(reader, "import_file", session_id=session, dataset="d", content_base64=csv)
            assert "is read-only for you" in error
        async with as_user("viewer") as viewer:
            assert "needs role" in await refusal(
                viewer, "import_file", session_id=session, dataset="d", content_base64=csv
            )
        other = await new_session(owner)
        async with as_user("analyst2") as stranger:
            assert "not found" in await refusal(
                stranger, "import_file", session_id=other, dataset="d", content_base64=csv
            )
        assert await stored_keys(owner, session) == [] and await stored_keys(owner, other) == []


async def test_an_admin_copies_an_imported_dataset_into_a_sandbox_table_the_reader_role_can_join(
    as_user: Callable[[str], Client], import_runtime: Runtime
) -> None:
    original = sample_frame(150).rename(columns={"plan": 'plan "tier"; drop table x'})
    async with as_user("admin") as admin:
        session = await new_session(admin)
        await call(
            admin, "import_file", session_id=session, dataset="d", content_base64=b64(csv_bytes(original))
        )
        loaded = await call(
            admin, "load_to_table", session_id=session, dataset="d", table="imported_customers"
        )
        assert loaded["table"] == "sandbox.imported_customers" and loaded["rows"] == 150
        again = await refusal(
            admin, "load_to_table", session_id=session, dataset="d", table="imported_customers"
        )
        assert "exists" in again and "replace=true" in again
        assert "not allowed" in await refusal(
            admin, "load_to_table", session_id=session, dataset="d", table='x"; drop table customers; --'
        )
        replaced = await call(
            admin, "load_to_table", session_id=session, dataset="d", table="imported_customers", replace=True
        )
        assert replaced["replaced"] is True
    async with as_user("analyst") as analyst:
        assert "needs role admin" in await refusal(
            analyst, "load_to_table", session_id=session, dataset="d", table="mine"
        )
    async with import_runtime.db.connection() as conn, conn.transaction():
        await conn.execute(f'SET LOCAL ROLE "{import_runtime.db.query_role}"')  # the query role's grants
        row = await conn.fetchrow(
            "SELECT count(*) AS n, sum(monthly_spend) AS spend, count(quality) AS quality, "
            "sum(tenure_days) AS tenure, count(*) FILTER (WHERE churned) AS churned, min(joined) AS first, "
            'count(DISTINCT "plan ""tier""; drop table x") AS plans FROM sandbox.imported_customers'
        )
    assert row["n"] == 150 and int(row["tenure"]) == int(original["tenure_days"].sum())
    assert row["spend"] == pytest.approx(original["monthly_spend"].sum())
    assert row["quality"] == original["quality"].notna().sum()
    assert row["churned"] == original["churned"].sum() and row["plans"] == 3
    assert row["first"] == original["joined"].min().to_pydatetime()
