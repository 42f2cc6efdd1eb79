"""`pip install .` (a wheel, not an editable install) gives a working `revenue-asi` (SPEC §11): the wheel carries
every SQL file, `bench` is not installed, and the installed console script migrates a database and sends a touch.

The fresh virtualenv gets only our wheel; its dependencies come from this test run's environment (a plain path in a
.pth file, which imports them without running the editable install's own path hooks), so nothing is downloaded."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests import factories
from tests.cli_runner import clean_env
from tests.harness import wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: building in the checkout would leave build/ behind in it
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", ".revenue-asi", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(out)], check=True, cwd=out)
    (built,) = out.glob("revenue_asi-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True)
    return venv


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    import tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {p.parent.relative_to(REPO).as_posix().replace("/", ".") for p in (REPO / "listener").rglob("__init__.py")}
    data_only = {"listener.store.sql", "listener.store.sql.triggers", "listener.store.sql.views", "listener.web.static",
                 "listener.web.templates"}
    assert in_tree | data_only == listed


def test_the_wheel_carries_the_sql_and_not_the_bench(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.endswith(".sql")}
    for path in (REPO / "listener").rglob("*.sql"):  # the named queries
        assert path.relative_to(REPO).as_posix() in shipped
    top_level = sorted((REPO / "sql").rglob("*.sql"))  # SPEC §2/§20: the one source, mapped into the package
    assert {p.relative_to(REPO / "sql").parent.as_posix() for p in top_level} == {".", "triggers", "views"}
    for path in top_level:
        assert "listener/store/sql/" + path.relative_to(REPO / "sql").as_posix() in shipped
    assert not (REPO / "listener" / "store" / "sql").exists()  # no second copy in the checkout
    assert any(n.startswith("listener/store/queries/") for n in shipped)
    assert not any(n.startswith("bench/") for n in names)
    for path in [*(REPO / "listener" / "web" / "templates").glob("*.html"), *(REPO / "listener" / "web" / "static").iterdir()]:
        assert path.relative_to(REPO).as_posix() in names  # the dashboard's templates and static files


async def test_the_installed_console_script_migrates_and_sends_a_touch(installed: Path, empty_db_url, tmp_path):
    script = installed / "bin" / "revenue-asi"
    env = clean_env(DATABASE_URL=empty_db_url, DRY_RUN="true", REVENUE_ASI_SWEEP_INTERVAL_S="0.5")
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import listener; print(listener.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert where.startswith(str(installed)), where  # the wheel's copy, not this checkout's
    migrate = subprocess.run([str(script), "migrate"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert migrate.returncode == 0, migrate.stderr

    from listener.store.database import connect
    conn = await connect(empty_db_url)
    process = await asyncio.create_subprocess_exec(str(script), "run", env=env, cwd=tmp_path,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        account_id = await factories.account(conn)
        lead_id = await factories.lead(conn, account_id)
        touch_id = await factories.touch(conn, account_id, lead_id)
        await wait_until(empty_db_url, "select status = 'sent' from touch_runs where id = $1", touch_id)
        assert await conn.fetchval("select count(*) from core_memory_events where event_type = 'touch_sent'"
                                   " and payload->>'touch_run_id' = $1", str(touch_id)) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=60)
        await conn.close()
    assert process.returncode == 0
    assert os.path.exists(script)
