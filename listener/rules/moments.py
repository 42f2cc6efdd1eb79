"""Times read from the database, made safe for any value (SPEC §11: year 1 and year 9999 are valid data).

asyncpg decodes ``timestamptz`` 'infinity' / '-infinity' as *naive* ``datetime.max`` / ``datetime.min`` (so
subtracting an aware ``now`` raises TypeError), and raises OverflowError for years outside 1..9999 (which
PostgreSQL accepts up to 294276 AD; 0003_poison.sql refuses them where other systems write times). Year 1 and
year 9999 decode, but moving them to another offset overflows. These helpers never raise.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_aware(moment: datetime) -> datetime:
    """``moment`` with a time zone: a naive value (asyncpg's ±infinity, or a naive column) is read as UTC."""
    return moment if moment.tzinfo is not None and moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def seconds_until(moment: datetime | None, cap: float, now: datetime | None = None) -> float:
    """Seconds from ``now`` (default: the current time) until ``moment``, within [0, cap]. None, a moment beyond
    the cap (year 9999, 'infinity') → ``cap``; a moment in the past (year 1, '-infinity') → 0. For the loops'
    sleeps: the dispatch loop's ``next_scheduled_at``, the reaction loop's ``next_reaction_due``."""
    if moment is None:
        return cap
    current = as_aware(now) if now is not None else datetime.now(UTC)
    try:
        seconds = (as_aware(moment) - current).total_seconds()
    except (OverflowError, TypeError, ValueError):
        return cap
    if seconds != seconds:  # NaN cannot come from datetimes; kept so the result is always a number in range
        return cap
    return min(cap, max(0.0, seconds))


def iso_or_none(moment: datetime | None) -> str | None:
    """ISO 8601 of any moment (naive ones read as UTC), for JSON documents; never raises."""
    if moment is None:
        return None
    try:
        return as_aware(moment).isoformat()
    except (OverflowError, ValueError):
        return str(moment)
