"""analyze_data on a source with a metric model, through MCP: the shop model on a files source holding the
generated shop answers churn by country and ARPU by month as pandas does on the generated rows; the
templates say what each source's model serves; a missing model part or segment is one line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pandas as pd
import pytest
from fastmcp import Client
from pydantic import SecretStr

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.support import error_text
from tests.warehouse.test_models import _churn_frame, _paid
from tests.warehouse.test_models_shop import PLAN, _frames
from warehouse.shop import CHURNING_COUNTRY
from warehouse.shop_store import load_shop
from warehouse.sources import Source

TOLERANCE = 1e-6
MINIMAL_MODEL = """
name: visits_only
version: 1
customer: {relation: people, key: id, signup_time: joined, segments: [region]}
"""


@pytest.fixture(scope="module")
def rows() -> dict[str, pd.DataFrame]:
    return _frames()


@pytest.fixture(scope="module")
async def modelled(
    tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    base = tmp_path_factory.mktemp("modelled")
    shop = base / "shop"
    shop.mkdir()
    await load_shop(
        Source(name="shop", kind="files", url=SecretStr(f"files://{shop}"), redacted_url="shop"), PLAN
    )
    people = base / "people"
    people.mkdir()
    pd.DataFrame(
        {
            "id": [1, 2, 3],
            "joined": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "region": ["a", "b", "a"],
        }
    ).to_parquet(people / "people.parquet")
    (base / "people.yaml").write_text(MINIMAL_MODEL)
    toml = base / "sources.toml"
    toml.write_text(
        f'[sources.shop]\nurl = "files://{shop}"\nmodel = "shop"\n'
        f'[sources.people]\nurl = "files://{people}"\nmodel = "people.yaml"\n'
    )
    async with make_runtime(customers=None, sources_path=toml) as runtime:
        yield runtime


async def _analyze(runtime: Runtime, analysis: str, parameters: dict[str, Any], source: str = "shop") -> Any:
    async with Client(app_for(runtime, "analyst").mcp) as client:
        return await client.call_tool(
            "analyze_data",
            {"data_source": source, "analysis_type": analysis, "parameters": parameters, "detail": "full"},
            raise_on_error=False,
        )


async def test_churn_by_country_through_mcp_matches_pandas_on_the_generated_rows(
    modelled: Runtime, rows: dict[str, pd.DataFrame]
) -> None:
    result = await _analyze(modelled, "churn_rate", {"group_by": "country"})
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer["metadata"]["data_source"] == "shop"
    assert answer["metadata"]["model"] == "shop" and answer["metadata"]["model_version"]
    expected = _churn_frame(rows).groupby("country")["churned"].agg(["size", "mean"])
    by_segment = answer["results"]["by_segment"]
    assert set(by_segment) == set(expected.index)
    for country, row in expected.iterrows():
        assert by_segment[country]["customers"] == int(row["size"])
        assert abs(by_segment[country]["churn_rate"] - float(row["mean"])) < TOLERANCE
    rates = {country: value["churn_rate"] for country, value in by_segment.items()}
    assert max(rates, key=rates.__getitem__) == CHURNING_COUNTRY

    again = await _analyze(modelled, "churn_rate", {"group_by": "country"})
    assert again.structured_content["metadata"]["cached"] is True
    assert again.structured_content["results"] == answer["results"]


async def test_arpu_by_month_through_mcp_matches_pandas(
    modelled: Runtime, rows: dict[str, pd.DataFrame]
) -> None:
    result = await _analyze(modelled, "arpu", {"group_by": "country"})
    assert not result.is_error, result.content
    paid = _paid(rows)
    paid["month"] = paid["paid_at"].dt.strftime("%Y-%m")
    per_month = paid.groupby("month").agg(revenue=("amount", "sum"), payers=("customer_id", "nunique"))
    by_month = result.structured_content["results"]["by_month"]
    assert set(by_month) == set(per_month.index)
    for month, row in per_month.iterrows():
        assert abs(by_month[month]["arpu"] - row["revenue"] / row["payers"]) < TOLERANCE


async def test_named_columns_on_a_modelled_source_still_analyse_that_table(modelled: Runtime) -> None:
    parameters = {"table": "orders", "time_column": "order_date", "value_column": "total", "aggregate": "sum"}
    result = await _analyze(modelled, "trend", parameters)
    assert not result.is_error, result.content
    assert result.structured_content["metadata"]["table"] == "orders"
    assert "model" not in result.structured_content["metadata"]


async def test_templates_say_per_source_what_its_model_serves(modelled: Runtime) -> None:
    async with Client(app_for(modelled, "analyst").mcp) as client:
        churn = json.loads((await client.read_resource("templates://analysis/churn_rate"))[0].text)
        network = json.loads((await client.read_resource("templates://analysis/network_quality"))[0].text)
    shop, people = churn["on_modelled_sources"]["shop"], churn["on_modelled_sources"]["people"]
    assert shop["supported"] is True and "country" in shop["segments"] and shop["model"] == "shop"
    assert people["supported"] is False and "churn" in people["missing"]
    assert network["on_modelled_sources"]["shop"]["supported"] is False
    assert "main" not in churn["on_modelled_sources"]


@pytest.mark.parametrize(
    ("source", "analysis", "parameters", "expected"),
    [
        ("people", "churn_rate", {}, "needs the model's churn definition"),
        ("shop", "churn_rate", {"group_by": "account_type"}, "cannot group by 'account_type'"),
        ("shop", "churn_rate", {"group_by": "country; DROP TABLE orders"}, "cannot group by"),
        ("shop", "network_quality", {}, "network_quality"),
    ],
)
async def test_what_a_model_cannot_serve_is_one_line(
    modelled: Runtime, source: str, analysis: str, parameters: dict[str, Any], expected: str
) -> None:
    result = await _analyze(modelled, analysis, parameters, source)
    assert result.is_error
    line = error_text(result)
    assert expected in line and "\n" not in line
