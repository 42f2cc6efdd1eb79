"""The Procfile runs the daemon the way SPEC §2 names it, and that command exists."""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.cli_runner import SCRIPT, clean_env, cli

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


async def test_procfile_worker_is_revenue_asi_run():
    entries = dict(line.split(":", 1) for line in PROCFILE.read_text().splitlines() if line.strip())
    assert entries["worker"].strip() == "revenue-asi run"
    program, *args = shlex.split(entries["worker"])
    assert program == SCRIPT.name
    result = await cli(*args, "--help", env=clean_env())
    assert result.rc == 0 and "daemon" in result.out.lower()


async def test_procfile_web_is_revenue_asi_web():
    entries = dict(line.split(":", 1) for line in PROCFILE.read_text().splitlines() if line.strip())
    assert entries["web"].strip() == "revenue-asi web"
    program, *args = shlex.split(entries["web"])
    assert program == SCRIPT.name
    result = await cli(*args, "--help", env=clean_env())
    assert result.rc == 0 and "webhooks" in result.out.lower()


async def test_web_refuses_a_public_host_without_a_dashboard_token():
    result = await cli("web", env=clean_env(REVENUE_ASI_HTTP_HOST="0.0.0.0", DATABASE_URL="postgresql://unused/x"))
    assert result.rc == 2
    assert "REVENUE_ASI_DASHBOARD_TOKEN" in result.err
