"""Every runtime query, named. Each ``*.sql`` file here holds blocks headed ``-- name: some_query``;
Python asks for ``Q.some_query`` and never builds SQL strings (procrastinate's queries.sql, split by role)."""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class NamedQueries:
    def __init__(self, folder: Traversable) -> None:
        self._queries: dict[str, str] = {}
        for path in sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
            text = path.read_text()
            headers = list(_HEADER.finditer(text))
            for i, header in enumerate(headers):
                end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
                body = text[header.end():end].strip()
                name = header.group("name")
                if name in self._queries:
                    raise ValueError(f"query {name!r} is defined twice (second time in {path.name})")
                if not body:
                    raise ValueError(f"query {name!r} in {path.name} is empty")
                self._queries[name] = body

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in listener/store/queries/*.sql") from None

    def names(self) -> list[str]:
        return sorted(self._queries)


Q = NamedQueries(resources.files("listener.store.queries"))
