"""The embedded PostgreSQL for tests: one server per test session, a fresh database per test cloned from a
migrated template (CREATE DATABASE … TEMPLATE, WAL-logged: no checkpoint, ~60 ms). See listener/testing.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

from listener.testing import EmbeddedTestServer, with_database

__all__ = ["TestServer", "restart_server", "with_database"]


class TestServer(EmbeddedTestServer):
    """One server per test session, in a temporary folder deleted at the end."""

    __test__ = False  # not a test class, despite its name

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="revenue-asi-test-")))

    def stop(self) -> None:
        self.close()


def restart_server(server: EmbeddedTestServer) -> None:
    server.restart()
