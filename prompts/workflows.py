"""Guided workflows (MCP prompts): an analyst's step-by-step plan naming the exact tool calls, in order.

Every tool call appears as a fenced ```json block {"tool": ..., "arguments": ...} that can be sent
as is; `SESSION_ID` stands for the id `session_create` returns. The end-to-end tests replay the
blocks of a rendered prompt literally, so a prompt that names a wrong tool or parameter fails a test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, get_args

from analytics.bands import AGE_BANDS, MISSING, TENURE_BANDS
from analytics.parameters import ArpuParameters, ChurnRateParameters, NetworkQualityParameters
from core.errors import InvalidInput

SESSION_ID = "SESSION_ID"
POOR_QUALITY_BELOW = 2.5

# Allowed arguments follow analyze_data's own parameter models, so a prompt never proposes a group it refuses.
CHURN_SEGMENTS: tuple[str, ...] = get_args(ChurnRateParameters.model_fields["group_by"].annotation)
NETWORK_SEGMENTS: tuple[str, ...] = get_args(NetworkQualityParameters.model_fields["group_by"].annotation)
REVENUE_SEGMENTS: tuple[str, ...] = get_args(ArpuParameters.model_fields["group_by"].annotation)
CHURN_FOCUS = ("segments", "drivers")
NETWORK_FOCUS = ("quality", "churn")
REVENUE_FOCUS = ("arpu", "trend", "retention")
RETENTION_SEGMENTS = ("account_type", "gender", "location", "age_band")
TABLES = ("customers", "network_events", "revenue")

_CALL_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)

# Figures in business terms come from the governed metric definitions first (query_metrics, metrics://main);
# SQL is for what no metric covers. Inline, not a ```json block: it is advice, not a step to replay.
METRICS_EXAMPLE: dict[str, Any] = {"source": "main", "metrics": ["churn_rate"], "group_by": ["account_type"]}
METRICS_FIRST = (
    "**Metrics first.** For a figure in business terms (revenue, ARPU, churn rate, network quality, data "
    "usage, by a segment or a month), call `query_metrics` before writing SQL, e.g. `query_metrics` with "
    f"`{json.dumps(METRICS_EXAMPLE)}`: it answers from the governed definitions listed, with what each "
    "means, in the resource `metrics://main`, and shows the SQL it ran. Use `query_database` only when no "
    "metric or dimension fits, such as the per-customer rows the steps below pull into the session."
)

# Latest instant in the data: the reference for an active customer's tenure (as analyze_data uses).
_DATA_END = (
    "(SELECT max(latest) FROM (SELECT max(event_timestamp) AS latest FROM network_events "
    "UNION ALL SELECT max(transaction_date) FROM revenue "
    "UNION ALL SELECT max(coalesce(churn_date, created_at)) FROM customers) AS ends)"
)


# ---------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Scope:
    """The optional arguments every workflow shares, validated."""

    start: dt.date | None
    end: dt.date | None

    @property
    def dated(self) -> bool:
        return self.start is not None or self.end is not None

    def describe(self, what: str) -> str:
        if self.start and self.end:
            return f"{what} from {self.start} to {self.end} (both days included)"
        if self.start:
            return f"{what} from {self.start} on"
        if self.end:
            return f"{what} up to {self.end} (included)"
        return f"{what} over the whole history in the data"

    def sql_filter(self, column: str) -> tuple[list[str], dict[str, str]]:
        """Conditions on `column` and their bound parameters (text dates, converted by to_date)."""
        conditions, parameters = [], {}
        if self.start:
            conditions.append(f"{column} >= to_date(%(start_date)s, 'YYYY-MM-DD')")
            parameters["start_date"] = self.start.isoformat()
        if self.end:
            conditions.append(f"{column} < to_date(%(end_date)s, 'YYYY-MM-DD') + 1")
            parameters["end_date"] = self.end.isoformat()
        return conditions, parameters

    def analysis_parameters(self) -> dict[str, str]:
        """The date range as analyze_data's start_date / end_date parameters."""
        dates = {}
        if self.start:
            dates["start_date"] = self.start.isoformat()
        if self.end:
            dates["end_date"] = self.end.isoformat()
        return dates


def scope(start_date: str | None, end_date: str | None) -> Scope:
    start, end = _date(start_date, "start_date"), _date(end_date, "end_date")
    if start and end and end < start:
        raise InvalidInput(f"end_date {end} is before start_date {start}; swap them")
    return Scope(start, end)


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None or not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"{name} '{value[:40]}' is not a date; use YYYY-MM-DD, e.g. 2024-06-30") from None


def _choice(value: str | None, allowed: tuple[str, ...], name: str, default: str | None) -> str | None:
    if value is None or value == "":
        return default
    if value not in allowed:
        raise InvalidInput(f"{name} '{value[:40]}' is not allowed; use one of: {', '.join(allowed)}")
    return value


def call(tool: str, **arguments: Any) -> str:
    """A tool call as the fenced JSON block the agent copies (and the end-to-end tests replay)."""
    return "```json\n" + json.dumps({"tool": tool, "arguments": arguments}, indent=2) + "\n```"


def tool_calls(prompt: str) -> list[dict[str, Any]]:
    """The tool calls of a rendered workflow, in order: [{tool, arguments}]."""
    return [json.loads(block) for block in _CALL_BLOCK.findall(prompt)]


def sql(*lines: str) -> str:
    return "\n".join(line for line in lines if line)


_TENURE_JOIN = (
    "CROSS JOIN LATERAL (SELECT extract(epoch FROM coalesce(c.churn_date, "
    + _DATA_END
    + ") - c.created_at) / 86400 AS days) AS tenure"
)


def _segment_sql(group: str) -> str:
    """The SQL expression of a customer segment (bands as analyze_data derives them)."""
    if group == "age_band":
        return _band_case("c.age", AGE_BANDS)
    if group == "tenure_band":
        return _band_case("tenure.days", TENURE_BANDS)
    return f"c.{group}"


def _band_case(expression: str, bands: tuple[tuple[float, str], ...]) -> str:
    """A CASE giving the same band labels as analyze_data (analytics.bands), for charts and queries."""
    branches = " ".join(f"WHEN {expression} >= {bound:g} THEN '{label}'" for bound, label in reversed(bands))
    return f"CASE WHEN {expression} IS NULL THEN '{MISSING}' {branches} END"


@dataclass
class Workflow:
    title: str
    goal: str
    steps: list[tuple[str, list[str]]] = field(default_factory=list)

    def step(self, heading: str, *body: str) -> None:
        self.steps.append((heading, [part for part in body if part]))

    def render(self, report: list[str]) -> str:
        lines = [f"# {self.title}", "", self.goal, "", METRICS_FIRST, ""]
        lines.append(
            "Follow the steps in order. Each tool call is given as JSON: call the tool named in `tool` "
            f"with exactly those `arguments`, replacing `{SESSION_ID}` by the session id from step 1. "
            "Keep every dataset, analysis and chart in that session so the work can be reviewed and "
            "resumed (another analyst can read it through `session://SESSION_ID`). If a call fails, "
            "its one-line error says what to fix: fix that and retry, do not skip the step."
        )
        for number, (heading, body) in enumerate(self.steps, start=1):
            lines.extend(["", f"## Step {number}. {heading}", "", *_paragraphs(body)])
        lines.extend(["", "## Report", "", *report])
        return "\n".join(lines) + "\n"


def _paragraphs(parts: list[str]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if out:
            out.append("")
        out.append(part)
    return out


UNCERTAINTY = [
    "- Give every rate or average with its 95% confidence interval and the number of customers or "
    "events behind it (`ci_low`-`ci_high`, `customers`, `events`). Say 'about' and round sensibly "
    "(one decimal for percentages).",
    "- Call a difference between segments real only when the test's p-value is below 0.05 and the "
    "intervals barely overlap; otherwise say the data cannot tell them apart. Mention the effect "
    "size (Cramér's V, eta squared or the correlation) as well as the p-value: with thousands of "
    "rows, tiny effects are 'significant'.",
    "- Correlation is not causation: name the plausible confounders (tenure, account type) before "
    "suggesting a cause.",
    "- Segments with fewer than about 30 customers (or a chi-square `min_expected_count` below 5) "
    "are too small to conclude from: say so instead of ranking them.",
    "- End with the session id and the keys you saved, so the reader can open the evidence.",
]


def _open_session(workflow: Workflow, purpose: str) -> None:
    workflow.step(
        "Open a session",
        f"Keep this analysis ({purpose}) in one session for two hours:",
        call("session_create", data_source="database", access_level="read", ttl_seconds=7200),
        f"Note the returned `session_id`; it replaces `{SESSION_ID}` in every call below.",
    )


def _snapshot(workflow: Workflow, look_for: str) -> None:
    workflow.step(
        "Get your bearings",
        call("summary_snapshot"),
        f"Look at: {look_for} If a requested date range lies outside the data's dates, say so and "
        "stop. Read the resources `metrics://main` (the named metrics `query_metrics` answers), "
        "`docs://data_dictionary` (business definitions) and `schema://database/main` (columns and "
        "allowed values) before writing SQL.",
    )


def _save_findings(workflow: Workflow, key: str, question: str, saved: list[str]) -> None:
    workflow.step(
        "Save your findings in the session",
        "Write your conclusions where the next analyst will find them (replace the angle-bracketed "
        "text with your own words and numbers):",
        call(
            "session_update",
            session_id=SESSION_ID,
            key=key,
            value={
                "question": question,
                "headline": "<one sentence with the main number and its 95% interval>",
                "evidence": saved,
                "caveats": "<sample sizes, confounders, what the data cannot tell>",
                "next_steps": "<what to check or do next>",
            },
        ),
        "Then confirm the chart was stored (the answer holds it, with its format and size):",
        call("session_read", session_id=SESSION_ID, key=saved[-1]),
    )


# ---------------------------------------------------------------- the workflows


def churn_analysis(
    segment: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    focus: str | None = None,
) -> str:
    """Churn by segment (rates with intervals and a chi-square test), its drivers, a chart, saved findings."""
    group = _choice(segment, CHURN_SEGMENTS, "segment", "account_type")
    focus = _choice(focus, CHURN_FOCUS, "focus", None)
    window = scope(start_date, end_date)
    assert group is not None
    dataset, analysis, chart = "churn_customers", f"churn_by_{group}", f"churn_by_{group}_chart"
    cohort = window.describe("customers who signed up")
    workflow = Workflow(
        "Churn analysis",
        f"Question: how does churn differ by {group}, and what goes with it? Population: {cohort}. "
        "Churn rate here is churned customers ÷ customers in the group (a cumulative share, not a "
        "monthly rate; see docs://data_dictionary).",
    )
    _open_session(workflow, f"churn by {group}")
    _snapshot(
        workflow,
        "the number of customers, the overall churn rate (your baseline) and the range of "
        "customers.created_at.",
    )
    conditions, parameters = window.sql_filter("c.created_at")
    extra = f"    {_segment_sql(group)} AS {group}," if group in ("age_band", "tenure_band") else ""
    query = sql(
        "SELECT c.customer_id, c.account_type, c.gender, c.location, c.age, c.created_at, c.churn_date,",
        extra,
        "    c.is_churned::int AS is_churned, tenure.days AS tenure_days,",
        "    e.avg_network_quality, coalesce(e.event_count, 0) AS event_count,",
        "    coalesce(e.total_data_usage_mb, 0) AS total_data_usage_mb,",
        "    coalesce(r.total_revenue, 0)::float8 AS total_revenue",
        "FROM customers AS c",
        _TENURE_JOIN,
        "LEFT JOIN (SELECT customer_id, avg(network_quality_score) AS avg_network_quality,",
        "        count(*) AS event_count, sum(data_usage_mb) AS total_data_usage_mb",
        "    FROM network_events GROUP BY customer_id) AS e ON e.customer_id = c.customer_id",
        "LEFT JOIN (SELECT customer_id, sum(amount) AS total_revenue",
        "    FROM revenue GROUP BY customer_id) AS r ON r.customer_id = c.customer_id",
        ("WHERE " + " AND ".join(conditions)) if conditions else "",
    )
    workflow.step(
        "Pull one row per customer into the session",
        "Per customer: segment columns, churn (1 = churned), tenure in days, mean network quality, "
        "usage and total revenue. The full result is stored as a session dataset; only a preview "
        "comes back.",
        call(
            "query_database",
            query=query,
            parameters=parameters,
            session_id=SESSION_ID,
            save_as=dataset,
        ),
        "Check: the stored row count equals the customers in scope (compare with the snapshot when "
        "no date range is given). Look at the preview: churned customers have a churn_date, active "
        "ones have none.",
    )
    workflow.step(
        f"Measure churn by {group}",
        call(
            "analyze_data",
            data_source=SESSION_ID,
            analysis_type="churn_rate",
            parameters={"dataset": dataset, "group_by": group},
            session_id=SESSION_ID,
            save_as=analysis,
        ),
        "Look at: `overall_churn_rate` and its `confidence_interval`; in `by_segment`, each "
        "segment's `churn_rate` with `ci_low`/`ci_high` and `customers`; `test.p_value` and "
        "`test.cramers_v` (is churn independent of the segment, and how strongly not?). Rank the "
        "segments, and note which intervals overlap.",
    )
    if focus != "segments":
        workflow.step(
            "Look for drivers",
            call(
                "analyze_data",
                data_source=SESSION_ID,
                analysis_type="correlation",
                parameters={
                    "dataset": dataset,
                    "method": "spearman",
                    "columns": [
                        "is_churned",
                        "avg_network_quality",
                        "tenure_days",
                        "age",
                        "event_count",
                        "total_revenue",
                    ],
                },
                session_id=SESSION_ID,
                save_as="churn_drivers",
            ),
            "Look at the `is_churned` row of the matrix and its p-values: poorer network quality "
            f"(mean score below {POOR_QUALITY_BELOW} is 'poor') should go with more churn; tenure "
            "is mechanical (churned customers' tenure stops at churn), so do not read it as a cause. "
            "Spearman is used because is_churned is 0/1 and revenue is skewed.",
        )
    if focus != "segments":
        workflow.step(
            "Model the drivers together",
            call(
                "analyze_data",
                data_source="database",
                analysis_type="churn_drivers",
                parameters={},
                session_id=SESSION_ID,
                save_as="churn_model",
            ),
            "A logistic regression of churn on standardised per-customer features over all customers. "
            "Look at: in `coefficients`, each driver's `odds_ratio` with `ci_low`/`ci_high` and "
            "`p_value` (below 1: the feature lowers churn odds); `cross_validation.auc_mean` (0.5 is "
            "chance); `warnings` (collinearity). The ranking in words is quotable; associations, not "
            "proof of cause.",
        )
        workflow.step(
            "See when customers leave",
            call(
                "analyze_data",
                data_source="database",
                analysis_type="retention",
                parameters={"group_by": group if group in RETENTION_SEGMENTS else "account_type"},
                session_id=SESSION_ID,
                save_as="churn_retention",
            ),
            "Kaplan-Meier survival by segment: the median lifetime per segment (none when fewer than "
            "half have left), the log-rank p-value, and the cohort table (does retention of newer "
            "signup months fall faster?).",
        )
    workflow.step(
        "Chart churn by segment and keep the chart",
        call(
            "create_visualization",
            data={"session_id": SESSION_ID, "key": analysis},
            title=f"Churn rate by {group}",
            format="png",
            session_id=SESSION_ID,
            save_as=chart,
        ),
        "The saved analysis charts as its churn rate per segment with the confidence intervals as "
        "error bars. Check the answer's `plotted` values against the rates of the analysis.",
    )
    drivers = ["churn_drivers", "churn_model", "churn_retention"] if focus != "segments" else []
    saved = [dataset, analysis, *drivers, chart]
    _save_findings(workflow, "findings", f"How does churn differ by {group}, and what goes with it?", saved)
    return workflow.render(
        [
            "Write a short report for a business reader:",
            f"1. The overall churn rate for {cohort}, with its 95% interval.",
            f"2. Churn by {group}: the ranking, the rates with intervals, the chi-square p-value and "
            "Cramér's V, and which differences are clear.",
            "3. The drivers worth acting on (network quality first if it shows), stated as "
            "associations, with their correlation and p-value.",
            "4. One or two recommendations that follow from the numbers, and what would confirm them.",
            *UNCERTAINTY,
        ]
    )


def network_analysis(
    segment: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    focus: str | None = None,
) -> str:
    """Network quality by segment, the share of poor events, and whether poor quality goes with churn."""
    group = _choice(segment, NETWORK_SEGMENTS, "segment", "event_type")
    focus = _choice(focus, NETWORK_FOCUS, "focus", None)
    window = scope(start_date, end_date)
    assert group is not None
    events = window.describe("network events")
    workflow = Workflow(
        "Network quality analysis",
        f"Question: where is network quality poor, and does it cost customers? Scope: {events}. "
        f"Scores run from 1 (worst) to 5 (best); an event is poor below {POOR_QUALITY_BELOW}.",
    )
    _open_session(workflow, f"network quality by {group}")
    _snapshot(workflow, "the number of events, their date range and the mean network quality.")
    analysis = f"quality_by_{group}"
    if focus != "churn":
        workflow.step(
            f"Measure quality by {group}",
            call(
                "analyze_data",
                data_source="database",
                analysis_type="network_quality",
                parameters={
                    "group_by": group,
                    "poor_threshold": POOR_QUALITY_BELOW,
                    **window.analysis_parameters(),
                },
                session_id=SESSION_ID,
                save_as=analysis,
            ),
            "Look at: `overall_mean_quality`, the `poor_share`, and per segment the mean, median, "
            "percentiles and poor share; the ANOVA and Kruskal-Wallis p-values say whether the "
            "segments differ, eta squared how much. Data sessions usually score lower than calls: "
            "compare like with like.",
        )
    conditions, parameters = window.sql_filter("e.event_timestamp")
    query = sql(
        "SELECT q.quality_band, count(*) AS customers,",
        "    count(*) FILTER (WHERE q.is_churned) AS churned,",
        "    avg(q.is_churned::int)::float8 AS churn_rate",
        "FROM (",
        "    SELECT c.customer_id, c.is_churned,",
        f"        CASE WHEN avg(e.network_quality_score) < {POOR_QUALITY_BELOW} THEN 'poor'",
        "             WHEN avg(e.network_quality_score) < 3.5 THEN 'fair' ELSE 'good' END AS quality_band",
        "    FROM customers AS c JOIN network_events AS e ON e.customer_id = c.customer_id",
        ("    WHERE " + " AND ".join(conditions)) if conditions else "",
        "    GROUP BY c.customer_id, c.is_churned",
        ") AS q",
        "GROUP BY q.quality_band ORDER BY min(CASE q.quality_band WHEN 'poor' THEN 1 WHEN 'fair' THEN 2 ELSE 3 END)",
    )
    if focus != "churn":
        workflow.step(
            "Find the days that broke from the baseline",
            call(
                "analyze_data",
                data_source="database",
                analysis_type="anomalies",
                parameters={"metric": "quality", "grain": "day", **window.analysis_parameters()},
                session_id=SESSION_ID,
                save_as="quality_anomalies",
            ),
            "Each listed day departs from its rolling median by more than the threshold in robust "
            "z-scores (median and MAD); look at its size and sign, and whether the days cluster (an "
            "outage) or scatter (noise at the threshold).",
        )
    workflow.step(
        "Relate each customer's quality to churn",
        f"Customers by their mean score: poor (< {POOR_QUALITY_BELOW}), fair (< 3.5), good.",
        call(
            "query_database",
            query=query,
            parameters=parameters,
            session_id=SESSION_ID,
            save_as="churn_by_quality",
        ),
        "Look at: whether churn_rate falls from poor to good, and how many customers each band "
        "holds (a band of a few dozen customers gives a wide interval: about ±1/sqrt(n)).",
    )
    if focus != "quality":
        workflow.step(
            "Test the link across all customers",
            call(
                "analyze_data",
                data_source="database",
                analysis_type="correlation",
                parameters={"method": "spearman"},
                session_id=SESSION_ID,
                save_as="quality_correlation",
            ),
            "Look at the correlation between `avg_network_quality` and `is_churned` (negative: "
            "poorer quality, more churn) with its p-value, and at `tenure_days`, which confounds it.",
        )
    workflow.step(
        "Chart churn by quality band and keep the chart",
        call(
            "create_visualization",
            data={"session_id": SESSION_ID, "dataset": "churn_by_quality"},
            chart_type="bar",
            x_axis="quality_band",
            y_axis="churn_rate",
            title="Churn rate by network quality band",
            format="png",
            session_id=SESSION_ID,
            save_as="churn_by_quality_chart",
        ),
    )
    saved = ([analysis, "quality_anomalies"] if focus != "churn" else []) + ["churn_by_quality"]
    saved += (["quality_correlation"] if focus != "quality" else []) + ["churn_by_quality_chart"]
    _save_findings(workflow, "findings", "Where is network quality poor, and does it drive churn?", saved)
    return workflow.render(
        [
            "Write a short report for the network team:",
            f"1. Mean quality and the share of poor events ({events}), with intervals.",
            f"2. Quality by {group}: the worst segments, how much worse, and whether the tests "
            "separate them.",
            "3. Churn by quality band and the quality-churn correlation: the size of the effect in "
            "customers lost.",
            "4. Where to invest first, and what would confirm the effect (a before/after comparison).",
            *UNCERTAINTY,
        ]
    )


def revenue_optimization(
    segment: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    focus: str | None = None,
) -> str:
    """ARPU by segment and month, revenue by service and payment method, revenue lost to churn."""
    group = _choice(segment, REVENUE_SEGMENTS, "segment", "account_type")
    focus = _choice(focus, REVENUE_FOCUS, "focus", None)
    window = scope(start_date, end_date)
    assert group is not None
    payments = window.describe("payments")
    workflow = Workflow(
        "Revenue optimisation",
        f"Question: where does revenue come from, where is it growing or lost? Scope: {payments}. "
        "ARPU = total revenue ÷ distinct paying customers over the same transactions (see "
        "docs://data_dictionary).",
    )
    _open_session(workflow, f"revenue by {group}")
    _snapshot(workflow, "the revenue total, the number of payments and their date range.")
    analysis = f"arpu_by_{group}"
    workflow.step(
        f"Measure ARPU by {group} and by month",
        call(
            "analyze_data",
            data_source="database",
            analysis_type="arpu",
            parameters={"group_by": group, **window.analysis_parameters()},
            session_id=SESSION_ID,
            save_as=analysis,
        ),
        "Look at: `overall_arpu`, and per segment the ARPU with its interval, revenue and paying "
        "customers; `by_month` for the trend. A segment can have a high ARPU but few customers: "
        "compare revenue shares too.",
    )
    conditions, parameters = window.sql_filter("r.transaction_date")
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    if focus in (None, "trend"):
        monthly = sql(
            "SELECT to_char(date_trunc('month', r.transaction_date), 'YYYY-MM') AS month, c.account_type,",
            "    sum(r.amount)::float8 AS revenue, count(DISTINCT r.customer_id) AS paying_customers,",
            "    (sum(r.amount) / count(DISTINCT r.customer_id))::float8 AS arpu",
            "FROM revenue AS r JOIN customers AS c ON c.customer_id = r.customer_id",
            where,
            "GROUP BY 1, 2 ORDER BY 1, 2",
        )
        workflow.step(
            "Pull the monthly revenue per account type",
            call(
                "query_database",
                query=monthly,
                parameters=parameters,
                session_id=SESSION_ID,
                save_as="monthly_revenue",
            ),
            "Look at: the months with few paying customers (the first and last months of the data "
            "are often partial: leave them out of growth claims).",
        )
    if focus in (None, "retention"):
        lost = sql(
            "SELECT c.account_type, count(DISTINCT c.customer_id) AS churned_customers,",
            "    (sum(r.amount) / count(DISTINCT c.customer_id))::float8 AS revenue_per_churned_customer,",
            "    sum(r.amount)::float8 AS revenue_before_churn",
            "FROM customers AS c JOIN revenue AS r ON r.customer_id = c.customer_id",
            ("WHERE c.is_churned AND " + " AND ".join(conditions)) if conditions else "WHERE c.is_churned",
            "GROUP BY c.account_type ORDER BY revenue_before_churn DESC",
        )
        workflow.step(
            "Size the revenue lost to churn",
            call(
                "query_database",
                query=lost,
                parameters=parameters,
                session_id=SESSION_ID,
                save_as="churned_revenue",
            ),
            "Look at: which account type's churn costs the most revenue; that is where retention "
            "spending pays back first.",
        )
    if focus in (None, "trend"):
        workflow.step(
            "Chart the monthly ARPU and keep the chart",
            call(
                "create_visualization",
                data={"session_id": SESSION_ID, "dataset": "monthly_revenue"},
                chart_type="line",
                x_axis="month",
                y_axis="arpu",
                hue="account_type",
                title="Monthly ARPU by account type",
                format="png",
                session_id=SESSION_ID,
                save_as="monthly_arpu_chart",
            ),
        )
        chart = "monthly_arpu_chart"
    else:
        chart = "revenue_chart"
        if focus == "arpu":
            by_segment = sql(
                f"SELECT {_segment_sql(group)} AS {group}, sum(r.amount)::float8 AS revenue,",
                "    count(DISTINCT r.customer_id) AS paying_customers,",
                "    (sum(r.amount) / count(DISTINCT r.customer_id))::float8 AS arpu",
                "FROM revenue AS r JOIN customers AS c ON c.customer_id = r.customer_id",
                _TENURE_JOIN if group == "tenure_band" else "",
                where,
                "GROUP BY 1 ORDER BY 1",
            )
            workflow.step(
                f"Pull revenue, paying customers and ARPU per {group}",
                call(
                    "query_database",
                    query=by_segment,
                    parameters=parameters,
                    session_id=SESSION_ID,
                    save_as="arpu_by_segment",
                ),
                "Check: the ARPU column matches the analysis of the previous step segment by segment.",
            )
        source, x_axis, y_axis, title = (
            (
                "churned_revenue",
                "account_type",
                "revenue_before_churn",
                "Revenue lost to churn by account type",
            )
            if focus == "retention"
            else ("arpu_by_segment", group, "arpu", f"ARPU by {group}")
        )
        workflow.step(
            "Chart it and keep the chart",
            call(
                "create_visualization",
                data={"session_id": SESSION_ID, "dataset": source},
                chart_type="bar",
                x_axis=x_axis,
                y_axis=y_axis,
                title=title,
                format="png",
                session_id=SESSION_ID,
                save_as=chart,
            ),
        )
    saved = [analysis]
    saved += ["arpu_by_segment"] if focus == "arpu" else []
    saved += ["monthly_revenue"] if focus in (None, "trend") else []
    saved += ["churned_revenue"] if focus in (None, "retention") else []
    _save_findings(
        workflow, "findings", "Where does revenue come from, and where is it lost?", [*saved, chart]
    )
    return workflow.render(
        [
            "Write a short report for the commercial team:",
            f"1. Overall ARPU ({payments}) and ARPU by {group}, with intervals and paying customers.",
            "2. The monthly trend: growth or decline, leaving partial months aside.",
            "3. Revenue lost to churn per account type, and what retaining a tenth of it is worth.",
            "4. Two or three actions ranked by expected revenue, with the assumption each rests on.",
            *UNCERTAINTY,
        ]
    )


PROFILES: dict[str, tuple[str, str, str]] = {
    # table -> (profile query, the column to chart, what to look for)
    "customers": (
        sql(
            "SELECT account_type, count(*) AS customers,",
            "    count(*) FILTER (WHERE is_churned) AS churned,",
            "    round(avg(age), 1)::float8 AS mean_age,",
            "    min(created_at) AS first_signup, max(created_at) AS last_signup",
            "FROM customers GROUP BY account_type ORDER BY customers DESC",
        ),
        "age",
        "the mix of account types, the age distribution (18 to 120 allowed), churn per type.",
    ),
    "network_events": (
        sql(
            "SELECT event_type, count(*) AS events,",
            "    avg(network_quality_score)::float8 AS mean_quality,",
            f"    avg((network_quality_score < {POOR_QUALITY_BELOW})::int)::float8 AS poor_share,",
            "    avg(duration_seconds)::float8 AS mean_duration_seconds,",
            "    sum(data_usage_mb)::float8 AS total_data_usage_mb",
            "FROM network_events GROUP BY event_type ORDER BY events DESC",
        ),
        "network_quality_score",
        "the mix of event types, quality per type (1 worst to 5 best), durations (0 for SMS) and data "
        "volumes (0 outside data sessions).",
    ),
    "revenue": (
        sql(
            "SELECT service_type, payment_method, count(*) AS payments,",
            "    sum(amount)::float8 AS revenue, avg(amount)::float8 AS mean_amount",
            "FROM revenue GROUP BY service_type, payment_method ORDER BY revenue DESC",
        ),
        "amount",
        "the revenue by service and payment method, and the skew of amounts (mean versus median).",
    ),
}


def explore_dataset(table: str | None = None) -> str:
    """A first look at one table: meaning, shape, distributions, a histogram, notes in a session."""
    name = _choice(table, TABLES, "table", "customers")
    assert name is not None
    profile, column, look_for = PROFILES[name]
    workflow = Workflow(
        f"Explore the {name} table",
        f"Goal: know what {name} holds, how it is distributed and what looks odd, before any analysis.",
    )
    _open_session(workflow, f"a first look at {name}")
    workflow.step(
        "Read what the table means",
        f"Read the resources `schema://database/main/{name}` (columns, types, constraints, indexes, "
        f"sample rows) and `docs://data_dictionary` (meaning, units, allowed values). Then:",
        call("summary_snapshot"),
        "Note the row count and date range of the table.",
    )
    workflow.step(
        "Profile it",
        call(
            "query_database", query=profile, parameters={}, session_id=SESSION_ID, save_as=f"{name}_profile"
        ),
        f"Look at: {look_for}",
    )
    sample = sql(f"SELECT {column} FROM {name}", f"WHERE {column} IS NOT NULL")
    workflow.step(
        f"Pull {column} for its distribution",
        call(
            "query_database", query=sample, parameters={}, session_id=SESSION_ID, save_as=f"{name}_{column}"
        ),
    )
    workflow.step(
        f"Chart the distribution of {column} and keep the chart",
        call(
            "create_visualization",
            data={"session_id": SESSION_ID, "dataset": f"{name}_{column}"},
            chart_type="histogram",
            x_axis=column,
            title=f"Distribution of {name}.{column}",
            format="png",
            session_id=SESSION_ID,
            save_as=f"{name}_{column}_histogram",
        ),
        "Look at: the shape (skewed, bimodal, clipped at a bound), and values piled at the limits.",
    )
    _save_findings(
        workflow,
        "notes",
        f"What does {name} hold, and what looks odd?",
        [f"{name}_profile", f"{name}_{column}", f"{name}_{column}_histogram"],
    )
    return workflow.render(
        [
            f"Summarise {name} in a few lines: its size and period, the main distributions with their "
            "medians and ranges, anything odd (missing values, values at a limit), and the questions it "
            "could answer next (suggest the churn_analysis, network_analysis or revenue_optimization "
            "prompt that fits).",
            *UNCERTAINTY,
        ]
    )
