"""Provider webhooks (SPEC §12). Filled in by the inbound work."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the webhook routes to `app`."""
