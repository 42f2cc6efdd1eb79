"""Running the real `revenue-asi` console script as a subprocess, with a clean environment."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "revenue-asi"
TIMEOUT = 120.0
SETTING_PREFIXES = ("REVENUE_ASI_", "TWILIO_", "ELASTICEMAIL_", "QA_SINK_")
SETTING_NAMES = {"DATABASE_URL", "DRY_RUN"}


@dataclass
class Result:
    rc: int
    out: str
    err: str


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any of the daemon's settings (quiet hours off), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in SETTING_NAMES and not k.upper().startswith(SETTING_PREFIXES)}
    env["REVENUE_ASI_QUIET_HOURS"] = "off"  # tests run at any hour; quiet-hours tests pass their own in `extra`
    env.update(extra)
    return env


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    """A clean environment on `db_url`, with wide, plain output for assertions on text."""
    return clean_env(DATABASE_URL=db_url, COLUMNS="200", NO_COLOR="1", TERM="dumb", **extra)


async def cli(*args: str, env: dict[str, str], timeout: float = TIMEOUT) -> Result:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
