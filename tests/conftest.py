from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from listener.store.database import connect
from tests.pg import TestServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    server = TestServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def migrated_template(pg_server: TestServer) -> TestServer:
    await pg_server.prepare_template()
    return pg_server


@pytest.fixture
async def db_url(migrated_template: TestServer) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    url = await migrated_template.fresh_database()
    try:
        yield url
    finally:
        await migrated_template.drop_database(url)


@pytest.fixture
async def empty_db_url(migrated_template: TestServer) -> AsyncIterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    url = await migrated_template.empty_database()
    try:
        yield url
    finally:
        await migrated_template.drop_database(url)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What tests measured (``record_property("measured", …)``), printed once at the end: with pytest-xdist the
    workers' own output is not shown, their reports' properties are."""
    lines = [str(value) for report in terminalreporter.stats.get("passed", [])
             for key, value in getattr(report, "user_properties", ()) if key == "measured"]
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
