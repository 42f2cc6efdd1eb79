"""Dashboard pages, JSON API, Command OS and health (SPEC §14). Filled in by the dashboard work."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the dashboard, API and health routes to `app`."""
