"""The zero set-up `exports` source: a few small CSV and Parquet files generated deterministically into
the home folder, so a server started with nothing configured also serves a files (DuckDB) source."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from pydantic import SecretStr

from warehouse.sources import Registry, Source, redact_url

NAME = "exports"
DESCRIPTION = "Demo exports (generated): plans.csv, usage.parquet, tickets.csv"
FILES = ("plans.csv", "usage.parquet", "tickets.csv")


def demo_frames(seed: int = 42) -> dict[str, pd.DataFrame]:
    """The demo tables by file name; the same seed always gives the same values."""
    rng = np.random.default_rng(seed)
    plans = pd.DataFrame(
        {
            "plan_id": [1, 2, 3, 4],
            "name": ["Basic", "Plus", "Pro", "Family"],
            "monthly_fee": [9.99, 19.99, 34.99, 49.99],
            "data_gb": [5, 20, 100, 200],
        }
    )
    days = pd.date_range("2024-01-01", periods=90, freq="D")
    count = 600
    usage = pd.DataFrame(
        {
            "account_id": rng.integers(1, 201, count),
            "day": rng.choice(days, count),
            "plan_id": rng.integers(1, 5, count),
            "data_mb": np.round(rng.gamma(2.0, 350.0, count), 1),
            "minutes": rng.poisson(45, count),
        }
    ).sort_values(["day", "account_id"], ignore_index=True)
    tickets = pd.DataFrame(
        {
            "ticket_id": np.arange(1, 301),
            "account_id": rng.integers(1, 201, 300),
            "opened": np.datetime_as_string(rng.choice(days.values, 300), unit="D"),
            "category": rng.choice(["billing", "network", "device", "other"], 300, p=[0.35, 0.4, 0.15, 0.1]),
            "resolved_hours": np.round(rng.exponential(20.0, 300), 1),
        }
    )
    return {"plans.csv": plans, "usage.parquet": usage, "tickets.csv": tickets}


def write_demo_exports(folder: Path, seed: int = 42) -> Path:
    """Write the demo files into `folder` (created) unless present; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in demo_frames(seed).items():
        path = folder / name
        if path.exists():
            continue
        partial = folder / f".{name}.partial"  # hidden, so never read as a table while written
        if name.endswith(".parquet"):
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False)
        partial.replace(path)
    return folder


def demo_source(folder: Path) -> Source:
    """The `exports` files source over `folder`."""
    url = "files://" + quote(str(folder.resolve()), safe="/")
    return Source(
        name=NAME, kind="files", url=SecretStr(url), redacted_url=redact_url(url), description=DESCRIPTION
    )


def with_demo_exports(registry: Registry, home: Path, seed: int = 42) -> Registry:
    """`registry` plus the demo `exports` source, its files written under `<home>/exports/` on first use."""
    folder = write_demo_exports(home / "exports", seed)
    sources = {source.name: source for source in registry}
    sources.setdefault(NAME, demo_source(folder))
    return Registry(sources, registry.digest)
