"""The human-readable tables (stderr) beside the JSON (stdout)."""

from __future__ import annotations

from typing import Any


def render(result: dict[str, Any]) -> str:
    return ""


def ok(result: dict[str, Any]) -> bool:
    return True
