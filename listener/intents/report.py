"""The `report.funnel` intent (SPEC §18): what a campaign's touches led to, per step and channel, over the last
`days` days — touches sent, delivered, replied, positive, unsubscribed, booked, and each as a rate over sent. One
implementation for Command OS (the API, the console, the CLI) and the funnels drawn on /campaigns.

What counts (listener/store/queries/report.sql, `report_funnel`):
- **sent**: the campaign's touches with status `sent` whose `sent_at` falls in the window;
- **delivered**: those whose `delivery_status` (the provider's callbacks, §12) is `delivered` or `read`;
- **replied / positive / unsubscribed / booked**: those that got a `reply_received` (not an out-of-office notice),
  `reply_positive` or `reply_negative` / a `reply_positive` / an `unsubscribe` / an `appointment_booked`.

Attribution: an event that names its touch (`payload.touch_run_id`, e.g. a one-click unsubscribe) counts for that
touch; any other event of the lead counts for the **lead's latest touch sent at or before the event, whatever its
campaign** — the touch that last reached the lead. It counts in this report when that touch is one of the
campaign's sent in the window; so an event counts once in the whole system, never for two campaigns, and an event
whose latest touch came from elsewhere (another campaign, an appointment reminder) is not this campaign's. A touch
counts once per kind, however many events it got, so every rate is at most 1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from listener.intents.errors import NotFound
from listener.intents.lead import jsonable
from listener.store.queries import Q

STAGES: tuple[str, ...] = ("sent", "delivered", "replied", "positive", "unsubscribed", "booked")
RATES: tuple[str, ...] = STAGES[1:]
DEFAULT_DAYS = 30
MIN_DAYS, MAX_DAYS = 1, 366
ATTRIBUTION = ("an event naming its touch (payload.touch_run_id) counts for that touch; any other reply, "
               "unsubscribe or booking counts for the lead's latest touch sent at or before it (whatever its "
               "campaign), here when that touch is this campaign's and was sent in the window; a touch counts once "
               "per kind")


def rates(counts: dict[str, int]) -> dict[str, float | None]:
    """Each stage over sent (4 decimals); None when nothing was sent."""
    sent = counts["sent"]
    return {k: (round(counts[k] / sent, 4) if sent else None) for k in RATES}


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(int(r[k]) for r in rows) for k in STAGES}


def check_days(days: Any) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"days must be an integer from {MIN_DAYS} to {MAX_DAYS}")
    return days


async def report_funnels(conn: asyncpg.Connection, campaign_ids: Sequence[UUID],
                         days: int = DEFAULT_DAYS) -> dict[UUID, dict[str, Any]]:
    """report.funnel for several campaigns at once (the /campaigns page), in three queries whatever their number;
    unknown ids are left out."""
    days = check_days(days)
    ids = list(dict.fromkeys(campaign_ids))
    if not ids:
        return {}
    campaigns = {r["id"]: r for r in await conn.fetch(Q.report_funnel_campaigns, ids, days)}
    found = list(campaigns)
    groups: dict[tuple[UUID, int, str], dict[str, Any]] = {}
    for record in await conn.fetch(Q.report_funnel_sent, found, days):
        groups[(record["campaign_id"], record["step"], record["channel"])] = {
            "step": record["step"], "channel": record["channel"], **dict.fromkeys(STAGES, 0),
            "sent": int(record["sent"]), "delivered": int(record["delivered"])}
    for record in await conn.fetch(Q.report_funnel_reactions, found, days):
        group = groups.get((record["campaign_id"], record["step"], record["channel"]))
        if group is not None:  # a touch committed between the two statements may be missing from the first
            group.update({k: int(record[k]) for k in ("replied", "positive", "unsubscribed", "booked")})
    rows: dict[UUID, list[dict[str, Any]]] = {c: [] for c in campaigns}
    for key in sorted(groups):
        row = groups[key]
        row["rates"] = rates(row)
        rows[key[0]].append(row)
    out: dict[UUID, dict[str, Any]] = {}
    for campaign_id, c in campaigns.items():
        by_step: dict[int, list[dict[str, Any]]] = {n: [] for n in range(1, c["steps"] + 1)}
        for row in rows[campaign_id]:
            by_step.setdefault(row["step"], []).append(row)
        steps = []
        for n in sorted(by_step):
            counts = _counts(by_step[n])
            steps.append({"step": n, **counts, "rates": rates(counts),
                          "channels": [r["channel"] for r in by_step[n]]})
        totals = _counts(rows[campaign_id])
        out[campaign_id] = {
            "campaign_id": str(campaign_id), "campaign_name": c["name"], "campaign_status": c["status"],
            "days": days, "since": jsonable(c["since"]), "until": jsonable(c["until"]),
            "rows": rows[campaign_id], "steps": steps, "totals": {**totals, "rates": rates(totals)},
            "attribution": ATTRIBUTION,
        }
    return out


async def report_funnel(conn: asyncpg.Connection, campaign_id: UUID, days: int = DEFAULT_DAYS) -> dict[str, Any]:
    """The campaign's funnel over the last `days` days: `rows` per step and channel (sent, delivered, replied,
    positive, unsubscribed, booked, and `rates` over sent), `steps` (the same summed over channels, every step of
    the campaign, also those nothing was sent at) and `totals`. Unknown campaign → NotFound (the API's 404);
    days outside 1–366 → ValueError."""
    report = (await report_funnels(conn, [campaign_id], days)).get(campaign_id)
    if report is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return report
