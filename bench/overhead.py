"""overhead: what the fair claim and sender pacing (SPEC §16) cost a single account that paces nothing — the drain
of N unpaced sms touches of one account (bench/drain.py: one daemon at the shipped defaults, one transaction, clock
from its commit until every touch is terminal and every reaction processed) with this code against BEFORE it.

``--before PATH``: another working tree of this repository at the commit before the change, e.g.
``git worktree add --detach /tmp/before fad94b7``. Its side runs its own code (its daemon, started from that tree
with it first on PYTHONPATH) on a database migrated by its own ``revenue-asi migrate`` (its sql/), cloned fresh for
every drain. ``--after PATH`` does the same for the other side; without it, this checkout (and its template).

Repetitions are interleaved ABBA (before, after, after, before, …); the ratio is after / before of the medians.
SPEC §16 / issue 18: an unpaced sender pays nothing for the feature (≥ 0.95 of before)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import drain
from bench.env import REPO, Env, describe
from listener.store.database import connect

SPEC_RATIO = 0.95


async def _sanity(env: Env, template: str) -> bool:
    """Does this side's schema have the pacing (sender_pacing)? Shows which code migrated the template."""
    assert env.pg is not None
    url = await env.pg.database_from(template, "probe")
    try:
        conn = await connect(url)
        try:
            return bool(await conn.fetchval("select to_regclass('sender_pacing') is not null"))
        finally:
            await conn.close()
    finally:
        await env.pg.drop_database(url)


async def run(env: Env, n: int, repeat: int, before: Path, after: Path | None = None) -> dict[str, Any]:
    assert env.pg is not None
    sides: dict[str, dict[str, Any]] = {}
    for name, checkout in (("before", before), ("after", after)):
        template = await env.pg.checkout_template(checkout, env.root) if checkout else env.pg.template
        sides[name] = {"checkout": str(checkout or REPO), "commit": describe(checkout or REPO),
                       "template": template, "has_sender_pacing": await _sanity(env, template), "runs": []}
    for rep in range(repeat):
        for name in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            side = sides[name]
            result = await drain.drain(env, n, 1, drain.SHIPPED, template=side["template"],
                                       checkout=before if name == "before" else after, checkpoint=True)
            result["rep"] = rep
            side["runs"].append(result)
    for side in sides.values():
        runs = side["runs"]
        side["touches_per_s"] = round(statistics.median(r["touches_per_s"] for r in runs), 1)
        side["seconds"] = round(statistics.median(r["seconds"] for r in runs), 3)
        side["cpu_us_per_touch_daemons"] = round(statistics.median(r["cpu_us_per_touch"]["daemons"] for r in runs))
        side["cpu_us_per_touch_postgres"] = round(statistics.median(r["cpu_us_per_touch"]["postgres"] for r in runs))
        side["transactions_per_touch"] = statistics.median(r["transactions_per_touch"] for r in runs)
    b, a = sides["before"], sides["after"]
    ratio = round(a["touches_per_s"] / b["touches_per_s"], 3)
    pairs = [round(x["touches_per_s"] / y["touches_per_s"], 3) for x, y in zip(a["runs"], b["runs"], strict=True)]
    return {"touches": n, "repeat": repeat, "daemons": 1, "settings": drain.SHIPPED,
            "order": "ABBA per repetition (before, after, after, before, …)",
            "before": b, "after": a, "ratio_after_over_before": ratio, "ratio_pairs": pairs,
            "cpu_ratio_daemons_after_over_before": round(a["cpu_us_per_touch_daemons"]
                                                         / b["cpu_us_per_touch_daemons"], 3),
            "cpu_ratio_postgres_after_over_before": round(a["cpu_us_per_touch_postgres"]
                                                          / b["cpu_us_per_touch_postgres"], 3),
            "within_spec": {"ratio_at_least_0.95": ratio >= SPEC_RATIO}}
