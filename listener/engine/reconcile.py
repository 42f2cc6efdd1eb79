"""outcome_unknown reconciled where the provider can tell (SPEC §11). No provider we send through takes an
idempotency key, so a request that may have reached it (a read timeout, a lease that expired mid-send) is failed
`outcome_unknown` and never re-sent; this job then asks the provider what happened and writes `touch_reconciled`
(`reached_provider` true/false, `provider_status`).

* Twilio, with the message's own sid: `GET …/Messages/{sid}.json` (`Calls/{sid}.json` for voice).
* Twilio, without it: `GET …/Messages.json?To=…&From=…&DateSent>=…` (`Calls.json?…&StartTime>=…`), matched by
  recipient, sender and creation time near the touch's send (from its lease start to a minute after its failure), and
  not already the provider id of another touch. No match in a complete listing → `reached_provider` false.
* ElasticEmail, with the transaction or message id: `GET /v4/events/{id}`. Without one nothing can be asked: the
  touch is noted as not reconcilable and not looked up again.

Bounded: a batch of touches per run, a few requests at a time, each touch at most five times a minute apart."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

from listener.rules.contacts import normalise_phone
from listener.rules.errors import TouchFailure
from listener.rules.text import clean_text
from listener.settings import Settings
from listener.store.queries import Q

log = logging.getLogger(__name__)

BATCH = 50
PARALLEL = 4
SETTLE_S = 5.0
MAX_BODY = 64 * 1024
SOURCE = "reconciler"


@dataclass(frozen=True)
class Verdict:
    reached_provider: bool
    provider_status: str
    provider_message_id: str | None


class NotReconcilable(Exception):
    """This touch cannot be looked up (`final`: never will be; else: try again later)."""

    def __init__(self, note: str, *, final: bool) -> None:
        super().__init__(note)
        self.note = note
        self.final = final


@dataclass(frozen=True)
class UnknownTouch:
    id: UUID
    lead_id: UUID
    channel: str
    provider_message_id: str | None
    failed_at: datetime
    lead_phone: str | None
    lead_email: str | None
    provider_config_json: str | None

    @property
    def config(self) -> dict[str, Any]:
        try:
            value = json.loads(self.provider_config_json or "{}")
        except (ValueError, RecursionError):
            return {}
        return value if isinstance(value, dict) else {}


class Reconciler:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.provider_timeout_s))
        return self._session

    async def run_once(self, limit: int = BATCH) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.touches_to_reconcile, limit, SETTLE_S)
        touches = [UnknownTouch(**dict(r.items())) for r in rows]
        counts = {"looked_up": len(touches), "reached": 0, "not_reached": 0, "not_reconcilable": 0, "retry": 0}
        semaphore = asyncio.Semaphore(PARALLEL)

        async def one(touch: UnknownTouch) -> None:
            async with semaphore:
                try:
                    verdict = await self.look_up(touch)
                except NotReconcilable as exc:
                    counts["not_reconcilable" if exc.final else "retry"] += 1
                    async with self.pool.acquire() as conn:
                        await conn.execute(Q.reconcile_attempt, touch.id, clean_text(exc.note)[:300], exc.final)
                    return
                counts["reached" if verdict.reached_provider else "not_reached"] += 1
                async with self.pool.acquire() as conn:
                    await conn.execute(Q.reconcile_touch, touch.id, verdict.reached_provider,
                                       verdict.provider_status, verdict.provider_message_id, SOURCE)

        await asyncio.gather(*(one(t) for t in touches))
        return {**counts, "idle": not touches}

    async def look_up(self, touch: UnknownTouch) -> Verdict:
        if touch.channel == "email":
            return await self._email(touch)
        return await self._twilio(touch)

    # --- Twilio -----------------------------------------------------------------------------------------------
    def _twilio_auth(self) -> dict[str, str]:
        if not (self.settings.twilio_account_sid and self.settings.twilio_auth_token):
            raise NotReconcilable("Twilio is not configured", final=False)
        credentials = f"{self.settings.twilio_account_sid}:{self.settings.twilio_auth_token.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}

    def _twilio_url(self, path: str) -> str:
        return (f"{self.settings.twilio_base_url.rstrip('/')}/2010-04-01/Accounts/"
                f"{self.settings.twilio_account_sid}/{path}")

    async def _twilio(self, touch: UnknownTouch) -> Verdict:
        resource = "Calls" if touch.channel == "voice" else "Messages"
        auth = self._twilio_auth()
        if touch.provider_message_id:
            status, data = await self._get(self._twilio_url(f"{resource}/{touch.provider_message_id}.json"), headers=auth)
            if status == 404:
                return Verdict(False, "not_found", touch.provider_message_id)
            return Verdict(True, str(data.get("status") or "unknown"), touch.provider_message_id)
        to, sender = self._twilio_parties(touch)
        since = touch.failed_at - timedelta(seconds=self.settings.lease_s + 60)
        params = {"To": to, "PageSize": "100"}
        if sender:
            params["From"] = sender
        params["StartTime>" if resource == "Calls" else "DateSent>"] = since.date().isoformat()
        status, data = await self._get(self._twilio_url(f"{resource}.json"), headers=auth, params=params)
        if status != 200:
            raise NotReconcilable(f"Twilio answered {status} to the list request", final=False)
        items = data.get(resource.lower())
        if not isinstance(items, list):
            raise NotReconcilable("Twilio's list answer has no items", final=False)
        window_end = touch.failed_at + timedelta(seconds=60)
        candidates = [item for item in items if isinstance(item, dict)
                      and since <= (_twilio_time(item.get("date_created")) or since - timedelta(1)) <= window_end]
        sids = [str(item.get("sid")) for item in candidates if item.get("sid")]
        if sids:
            async with self.pool.acquire() as conn:
                known = {r["provider_message_id"] for r in await conn.fetch(Q.known_provider_ids, sids)}
            candidates = [item for item in candidates if str(item.get("sid")) not in known]
        if candidates:
            found = min(candidates, key=lambda item: _twilio_time(item.get("date_created")) or window_end)
            return Verdict(True, clean_text(str(found.get("status") or "unknown")), clean_text(str(found.get("sid"))))
        if data.get("next_page_uri"):
            raise NotReconcilable("more than one page of candidates; look again later", final=False)
        return Verdict(False, "not_found", None)

    def _twilio_parties(self, touch: UnknownTouch) -> tuple[str, str | None]:
        try:
            to = self.settings.qa_sink_phone or normalise_phone(touch.lead_phone, self.settings.default_region)
        except TouchFailure as failure:
            raise NotReconcilable(f"no phone to look up: {failure.error_code}", final=True) from None
        sender = touch.config.get("from")
        sender = sender.strip() if isinstance(sender, str) and sender.strip() else None
        if touch.channel == "whatsapp":
            to = f"whatsapp:{to}"
            if sender and not sender.startswith("whatsapp:"):
                sender = f"whatsapp:{sender}"
        return to, sender

    # --- ElasticEmail -----------------------------------------------------------------------------------------
    async def _email(self, touch: UnknownTouch) -> Verdict:
        if not touch.provider_message_id:
            raise NotReconcilable("ElasticEmail can only be asked by transaction or message id; none was returned",
                                  final=True)
        if not self.settings.elasticemail_api_key:
            raise NotReconcilable("ElasticEmail is not configured", final=False)
        headers = {"X-ElasticEmail-ApiKey": self.settings.elasticemail_api_key.get_secret_value()}
        url = f"{self.settings.elasticemail_base_url.rstrip('/')}/v4/events/{touch.provider_message_id}"
        status, data = await self._get(url, headers=headers)
        if status == 404:
            return Verdict(False, "not_found", touch.provider_message_id)
        if status != 200:
            raise NotReconcilable(f"ElasticEmail answered {status}", final=False)
        events = data.get("events") if isinstance(data, dict) else data
        kinds = [str(e.get("EventType")) for e in events or [] if isinstance(e, dict)]
        return Verdict(bool(kinds), clean_text(kinds[-1]) if kinds else "not_found", touch.provider_message_id)

    async def _get(self, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self._http().get(url, **kwargs) as response:
                raw = await response.content.read(MAX_BODY)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise NotReconcilable(f"provider unreachable ({type(exc).__name__})", final=False) from None
        if status == 404:
            return status, {}
        try:
            return status, json.loads(raw.decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            raise NotReconcilable(f"unreadable answer ({status})", final=False) from None


def _twilio_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def reconcile_job(pool: asyncpg.Pool, settings: Settings, dry_run: bool, limit: int | None) -> dict[str, Any]:
    """`revenue-asi tick reconcile` and the daemon's periodic run (REVENUE_ASI_RECONCILE_INTERVAL_S)."""
    if dry_run:
        async with pool.acquire() as conn:
            rows = await conn.fetch(Q.touches_to_reconcile, limit or BATCH, SETTLE_S)
        return {"would_look_up": len(rows), "dry_run": True}
    reconciler = Reconciler(pool, settings)
    try:
        return await reconciler.run_once(limit or BATCH)
    finally:
        await reconciler.aclose()
