"""The data dictionary (docs://data_dictionary): what every column means, its units and allowed values,
and the business definitions analyses use (churn, churn rate, ARPU, network quality, tenure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ColumnEntry:
    meaning: str
    units: str = "—"
    allowed: str = "—"


TABLE_PURPOSE = {
    "customers": "One row per subscriber: who they are, their plan, and whether (and when) they left.",
    "network_events": "One row per call, SMS or data session a customer made, with the network "
    "quality measured during it.",
    "revenue": "One row per payment a customer made.",
}

COLUMNS: dict[str, dict[str, ColumnEntry]] = {
    "customers": {
        "customer_id": ColumnEntry("Unique identifier of the customer.", "UUID", "any UUID; primary key"),
        "created_at": ColumnEntry(
            "When the customer signed up (start of tenure).",
            "timestamp without time zone, UTC",
            "not null",
        ),
        "age": ColumnEntry("Age of the customer at sign-up.", "years", "18 to 120; may be NULL (unknown)"),
        "gender": ColumnEntry(
            "Self-reported gender.", "—", "'Male', 'Female', 'Other', 'Unspecified'; may be NULL"
        ),
        "location": ColumnEntry(
            "City of the customer's billing address (UK cities in the synthetic data).",
            "—",
            "free text up to 100 characters, e.g. 'London', 'Manchester'",
        ),
        "account_type": ColumnEntry(
            "The customer's plan; the usual segment for churn and ARPU.",
            "—",
            "'Basic', 'Premium', 'Enterprise'",
        ),
        "is_churned": ColumnEntry(
            "TRUE when the customer has left (cancelled); see Churn below.",
            "boolean",
            "TRUE, FALSE (default FALSE)",
        ),
        "churn_date": ColumnEntry(
            "When the customer left. Set exactly when is_churned is TRUE, never before created_at.",
            "timestamp without time zone, UTC",
            "NULL when is_churned is not TRUE; otherwise >= created_at",
        ),
    },
    "network_events": {
        "event_id": ColumnEntry("Unique identifier of the event.", "UUID", "any UUID; primary key"),
        "customer_id": ColumnEntry(
            "The customer who made the call, SMS or data session.",
            "UUID",
            "references customers.customer_id (deleted with the customer)",
        ),
        "event_timestamp": ColumnEntry(
            "When the event started; always inside the customer's active life (sign-up to churn).",
            "timestamp without time zone, UTC",
            "not null",
        ),
        "event_type": ColumnEntry("Kind of usage.", "—", "'call', 'sms', 'data'"),
        "network_quality_score": ColumnEntry(
            "Network quality measured during the event; see Network quality score below.",
            "score from 1.0 (worst) to 5.0 (best), two decimals",
            "1.0 to 5.0",
        ),
        "duration_seconds": ColumnEntry(
            "Length of a call or data session; 0 for an SMS.", "seconds", "0 or more"
        ),
        "data_usage_mb": ColumnEntry(
            "Data transferred during a data session; 0 for calls and SMS.",
            "megabytes (MB)",
            "0 or more",
        ),
    },
    "revenue": {
        "transaction_id": ColumnEntry("Unique identifier of the payment.", "UUID", "any UUID; primary key"),
        "customer_id": ColumnEntry(
            "The customer who paid.", "UUID", "references customers.customer_id (deleted with the customer)"
        ),
        "transaction_date": ColumnEntry(
            "When the payment was made; inside the customer's active life.",
            "timestamp without time zone, UTC",
            "not null",
        ),
        "amount": ColumnEntry(
            "Amount paid; the basis of every revenue and ARPU figure.",
            "currency units, exact to 2 decimals (numeric(10,2))",
            "0 or more, not null",
        ),
        "service_type": ColumnEntry(
            "What the payment was for.", "—", "'voice', 'data', 'sms', 'subscription'"
        ),
        "payment_method": ColumnEntry(
            "How the customer paid.", "—", "'credit_card', 'debit_card', 'bank_transfer', 'mobile_wallet'"
        ),
    },
}

POOR_QUALITY_BELOW = 2.5

# Named metrics of the built-in database's model (warehouse/models/telecom.yaml; a test keeps them in step).
NAMED_METRICS = ("revenue", "arpu", "churn_rate", "churns", "avg_quality", "poor_quality_share", "data_usage")
METRICS_FIRST = (
    "For a figure in business terms, call `query_metrics` (source `main`) before writing SQL: it answers "
    'from governed definitions, e.g. `query_metrics(source="main", metrics=["churn_rate"], '
    'group_by=["account_type"])`, with the SQL it ran. The resource `metrics://main` lists every metric '
    f"({', '.join(f'`{name}`' for name in NAMED_METRICS)}, ...), its dimensions (account_type, location, "
    "service_type, event_type, ...) and exactly what each means; its definitions follow the business "
    "definitions below. Use `query_database` only when no metric or dimension fits (per-customer rows, a "
    "column no metric covers)."
)

DEFINITIONS: list[tuple[str, str]] = [
    (
        "Churn",
        "A customer has churned when `customers.is_churned` is TRUE: they cancelled and are no longer "
        "a customer. `churn_date` is when they left. Everyone else is active.",
    ),
    (
        "Churn rate",
        "For a group of customers: churned customers ÷ all customers in the group, "
        "`count(*) FILTER (WHERE is_churned) / count(*)` over `customers`. It is a cumulative share "
        "over each customer's whole history in the data, not a monthly rate. A churn rate for a "
        "period (customers whose churn_date falls in it ÷ customers active at its start) is a "
        "different measure: say which one you report. Report it with its 95% confidence interval "
        "(analyze_data gives one); small segments have wide intervals.",
    ),
    (
        "ARPU (average revenue per user)",
        "Total revenue ÷ distinct paying customers, over the same transactions: "
        "`sum(revenue.amount) / count(DISTINCT revenue.customer_id)`. Customers with no payment in "
        "the scope are not in the denominator. For a segment or a period, restrict both the sum and "
        "the count to that segment's or period's transactions (monthly ARPU: the transactions of that "
        "month and the customers who paid in it). Units: currency units per paying customer.",
    ),
    (
        "Network quality score",
        "A score per network event from 1.0 (worst) to 5.0 (best), higher is better. A customer's "
        "quality is the mean score of their events. Quality is **poor** below "
        f"{POOR_QUALITY_BELOW} (`network_quality_score < {POOR_QUALITY_BELOW}`). Data sessions "
        "typically score lower than calls, SMS slightly higher: compare like with like "
        "(group by event_type).",
    ),
    (
        "Tenure",
        "How long someone has been a customer: from `created_at` to `churn_date` for a churned "
        "customer, and to the end of the observation (the latest timestamp in the data) for an "
        "active one. Measured in days (`tenure_days`). Customers who joined late have had less time "
        "to churn, so compare churn across segments with similar tenure.",
    ),
    (
        "Paying customer",
        "A customer with at least one row in `revenue` within the scope considered.",
    ),
    (
        "Active customer",
        "A customer whose `is_churned` is not TRUE (for a date D: created_at <= D and churn_date is "
        "NULL or after D).",
    ),
]


def render_dictionary() -> str:
    """The dictionary as markdown: a section per table with every column, then the definitions."""
    lines = [
        "# Data dictionary",
        "",
        "Every column of the analytics tables, with its meaning, units and allowed values, and the "
        "business definitions the analyses use. Types, constraints and indexes as the database has "
        "them right now: `schema://database/main`.",
        "",
        "## Ask with query_metrics first",
        "",
        METRICS_FIRST,
    ]
    for table, columns in COLUMNS.items():
        lines.extend(["", f"## {table}", "", TABLE_PURPOSE[table], ""])
        lines.extend(["| column | meaning | units | allowed values |", "|---|---|---|---|"])
        for name, entry in columns.items():
            lines.append(f"| `{name}` | {entry.meaning} | {entry.units} | {entry.allowed} |")
    lines.extend(["", "## Business definitions", ""])
    for term, definition in DEFINITIONS:
        lines.append(f"- **{term}**: {definition}")
    lines.extend(
        [
            "",
            "## Relationships",
            "",
            "- `network_events.customer_id` and `revenue.customer_id` reference `customers.customer_id` "
            "(ON DELETE CASCADE): join on customer_id.",
            "- A customer has about 30 network events and about 8 payments, all between created_at and "
            "churn_date (or the end of the data).",
        ]
    )
    return "\n".join(lines) + "\n"
