"""Import bombs and bad encodings through MCP: a PDF stream or xlsx part that inflates past the cap is refused
in one line, quickly and within bounded memory, nothing is stored, and other users are answered meanwhile."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.imports.files import pdf_bomb, xlsx_part_bomb
from tests.imports.test_import_tool import b64, new_session, stored_keys
from tests.support import call, refusal

ROOT = Path(__file__).resolve().parents[2]
STREAM_CAP = 50_000_000  # IMPORT_MAX_STREAM_BYTES default


@pytest.fixture(scope="module")
async def bomb_runtime(make_runtime: Callable[..., Any]) -> AsyncIterator[Runtime]:
    """The import limits at their defaults (100 MB files, 50 MB streams), as a real deployment has them."""
    async with make_runtime(customers=None) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def as_user(bomb_runtime: Runtime) -> Callable[[str], Client]:
    apps = {user: app_for(bomb_runtime, user) for user in ("analyst", "analyst2")}
    return lambda user: Client(apps[user].mcp)


async def other_user_answer_seconds(client: Client, during: asyncio.Task[Any]) -> float:
    """The slowest answer another user gets to session_list while `during` runs."""
    slowest = 0.0
    while True:
        started = time.perf_counter()
        await call(client, "session_list")
        slowest = max(slowest, time.perf_counter() - started)
        if during.done():
            return slowest
        await asyncio.sleep(0.01)


BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "PDF content stream inflating 1 MB to 1 GiB": (
        pdf_bomb,
        "a stream of page 1 inflates past 50,000,000 bytes",
    ),
    "xlsx sheet part inflating 1.9 MB to 200 MiB": (
        xlsx_part_bomb,
        "xlsx part 'xl/worksheets/sheet1.xml' inflates past 50,000,000 bytes",
    ),
}


@pytest.mark.parametrize("case", list(BOMBS))
async def test_a_decompression_bomb_is_refused_in_one_line_nothing_is_stored_and_others_are_answered(
    as_user: Callable[[str], Client], case: str
) -> None:
    build, expected = BOMBS[case]
    content = b64(build())
    async with as_user("analyst") as attacker, as_user("analyst2") as other:
        session = await new_session(attacker)
        attack = asyncio.create_task(
            refusal(attacker, "import_file", session_id=session, dataset="bomb", content_base64=content)
        )
        slowest = await other_user_answer_seconds(other, attack)
        error = await attack
        assert expected in error and "IMPORT_MAX_STREAM_BYTES" in error
        assert slowest < 1.0
        assert await stored_keys(attacker, session) == []


@pytest.mark.parametrize("encoding", ["zlib_codec", "rot13", "base64", "idna"])
async def test_an_encoding_that_cannot_read_text_is_refused_in_one_line_and_nothing_is_stored(
    as_user: Callable[[str], Client], encoding: str
) -> None:
    async with as_user("analyst") as client:
        session = await new_session(client)
        error = await refusal(
            client,
            "import_file",
            session_id=session,
            dataset="d",
            content_base64=b64(b"name,city\nAnn,Paris\nBob,Lyon\n"),
            options={"encoding": encoding},
        )
        assert encoding in error and "text" in error
        assert "internal error" not in error.lower()
        assert await stored_keys(client, session) == []


# In a fresh interpreter, so the high-water mark of its memory belongs to this import alone: the libraries
# are loaded and a real PDF and workbook parsed first, then the bombs; the growth of the peak is reported.
_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource
    from core.errors import InvalidInput
    from importers import parse_file
    from tests.imports.files import (
        frame_rows, pdf_bomb, pdf_bytes, revenue_table, sample_frame, xlsx_bytes, xlsx_part_bomb,
    )

    parse_file(pdf_bytes(revenue_table(60)))
    parse_file(xlsx_bytes({"Data": frame_rows(sample_frame(100))}))
    bombs = [pdf_bomb(), xlsx_part_bomb()]

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    before, refusals = peak(), []
    for bomb in bombs:
        try:
            parse_file(bomb)
            refusals.append(None)
        except InvalidInput as error:
            refusals.append(error.message)
    print(json.dumps({"growth": peak() - before, "refusals": refusals}))
    """
)


def test_the_peak_memory_of_refusing_the_bombs_grows_by_at_most_twice_the_stream_cap() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-2_000:]
    measured = json.loads(finished.stdout.strip().splitlines()[-1])
    assert all(message and "inflates past" in message for message in measured["refusals"]), measured
    assert measured["growth"] <= 2 * STREAM_CAP, f"peak RSS grew by {measured['growth']:,} bytes"
