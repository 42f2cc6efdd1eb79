"""`revenue-asi lead inspect` and `revenue-asi lead enroll` (issue 5), as subprocesses of the real console script."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "revenue-asi"
TIMEOUT = 120.0
SETTING_PREFIXES = ("REVENUE_ASI_", "TWILIO_", "ELASTICEMAIL_", "QA_SINK_")


@dataclass
class Result:
    rc: int
    out: str
    err: str


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("DATABASE_URL", "DRY_RUN") and not k.upper().startswith(SETTING_PREFIXES)}
    env.update({"DATABASE_URL": db_url, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra)
    return env


async def cli(*args: str, env: dict[str, str], timeout: float = TIMEOUT) -> Result:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
