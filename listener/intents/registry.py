"""Every Command OS intent in one table (SPEC §14, §18): its name, its arguments' pydantic schema, whether it
writes, what it does (`run`: a read's answer, a write's execution), what it would do (`preview`, writes only), and
how its arguments are made exact before either (`canonical`: a campaign named by name becomes its id). The CLI,
POST /api/command-os and the console all go through this table (listener/intents/command_os.py `run_command`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID, uuid4

import asyncpg
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)

from listener.intents.campaign import (
    find_campaign,
    list_campaigns,
    pause_campaign,
    preview_pause,
    preview_resume,
    resume_campaign,
)
from listener.intents.errors import CommandError, NotFound
from listener.intents.lead import (
    enroll_lead,
    inspect_lead,
    preview_enroll,
    preview_stop,
    preview_suppress,
    stop_lead,
    suppress_lead,
)
from listener.intents.reactions import preview_retry, retry_reactions
from listener.intents.report import DEFAULT_DAYS, MAX_DAYS, MIN_DAYS, report_funnel
from listener.intents.status import system_status
from listener.intents.touch import cancel_touch, preview_cancel
from listener.store.queries import Q

SYSTEM_STATUS, LEAD_INSPECT, LEAD_ENROLL = "system.status", "lead.inspect", "lead.enroll"
CAMPAIGN_LIST, CAMPAIGN_PAUSE, CAMPAIGN_RESUME = "campaign.list", "campaign.pause", "campaign.resume"
LEAD_STOP, LEAD_SUPPRESS, TOUCH_CANCEL = "lead.stop", "lead.suppress", "touch.cancel"
REACTIONS_RETRY, REPORT_FUNNEL = "reactions.retry", "report.funnel"
DEFAULT_STOP_REASON = "command_os"  # lead.stop from text that gives no reason
MAX_EVENT_IDS = 1000


@dataclass(frozen=True)
class Context:
    """Who runs the command and how: the dashboard or the CLI, the text typed (if any), the phone region for
    lead.inspect, and the id the command_runs row will have (events written by the intent carry it)."""

    region: str = "US"
    actor: str = "cli"
    text: str | None = None
    command_run_id: UUID = field(default_factory=uuid4)


@dataclass(frozen=True)
class Resolved:
    """Text resolved to an intent and its arguments (not yet checked): by the rules, or by the model."""

    intent: str
    args: dict[str, Any]
    by: str = "rules"


Run = Callable[[asyncpg.Connection, dict[str, Any], Context], Awaitable[dict[str, Any]]]
Canonical = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[dict[str, Any]]]


async def _as_given(_conn: asyncpg.Connection, args: dict[str, Any]) -> dict[str, Any]:
    return args


@dataclass(frozen=True)
class Intent:
    name: str
    schema: type[BaseModel]
    writes: bool
    run: Run
    summary: str  # one line, for the 422 / 503 answers, the model's instructions and `--help`
    preview: Run | None = None
    canonical: Canonical = _as_given


# --- argument schemas -----------------------------------------------------------------------------------------


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _whole_number(value: Any) -> Any:
    """days: an integer (or its digits as a string, as a model may write it); never a boolean."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number of days")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def _printable(value: str) -> str:
    """No control characters or lone surrogates: PostgreSQL refuses NUL in text and jsonb, and a reason or a name is
    written to both."""
    if any(ord(c) < 32 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must not contain control characters")
    return value


CampaignRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                        AfterValidator(_printable)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                   AfterValidator(_printable)]
Days = Annotated[int, BeforeValidator(_whole_number), Field(ge=MIN_DAYS, le=MAX_DAYS)]


class NoArgs(Args):
    pass


class LeadArgs(Args):
    lead_id: UUID


class EnrollArgs(Args):
    lead_id: UUID
    campaign_id: CampaignRef = Field(description="the campaign's id or name")


class CampaignArgs(Args):
    campaign_id: CampaignRef = Field(description="the campaign's id or name")


class LeadStopArgs(Args):
    lead_id: UUID
    reason: Reason


class TouchArgs(Args):
    touch_id: UUID


class RetryArgs(Args):
    event_ids: list[UUID] | None = Field(None, min_length=1, max_length=MAX_EVENT_IDS)
    all: StrictBool = False

    @model_validator(mode="after")
    def _one_scope(self) -> RetryArgs:
        if (self.event_ids is not None) == self.all:
            raise ValueError('reactions.retry needs event_ids (a list of event ids) or "all": true, not both')
        return self


class FunnelArgs(Args):
    campaign_id: CampaignRef = Field(description="the campaign's id or name")
    days: Days = DEFAULT_DAYS


# --- the intents: thin adapters from checked arguments to the implementations -----------------------------------


async def _campaign_by_ref(conn: asyncpg.Connection, args: dict[str, Any]) -> dict[str, Any]:
    campaign = await find_campaign(conn, args["campaign_id"])
    return {**args, "campaign_id": campaign["id"]}


async def _enroll_campaign_by_ref(conn: asyncpg.Connection, args: dict[str, Any]) -> dict[str, Any]:
    """lead.enroll: a campaign named by name is looked for in the lead's account."""
    lead = await conn.fetchrow(Q.intent_lead, args["lead_id"])
    if lead is None:
        raise NotFound(f"no lead with id {args['lead_id']}")
    campaign = await find_campaign(conn, args["campaign_id"], account_id=lead["account_id"])
    return {**args, "campaign_id": campaign["id"]}


async def _status(conn: asyncpg.Connection, _args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await system_status(conn)


async def _inspect(conn: asyncpg.Connection, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return await inspect_lead(conn, args["lead_id"], default_region=ctx.region)


async def _enroll(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await enroll_lead(conn, args["lead_id"], args["campaign_id"])


async def _enroll_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_enroll(conn, args["lead_id"], args["campaign_id"])


async def _campaign_list(conn: asyncpg.Connection, _args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await list_campaigns(conn)


async def _pause(conn: asyncpg.Connection, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return await pause_campaign(conn, args["campaign_id"], ctx.command_run_id)


async def _pause_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_pause(conn, args["campaign_id"])


async def _resume(conn: asyncpg.Connection, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return await resume_campaign(conn, args["campaign_id"], ctx.command_run_id)


async def _resume_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_resume(conn, args["campaign_id"])


async def _stop(conn: asyncpg.Connection, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return await stop_lead(conn, args["lead_id"], args["reason"], ctx.command_run_id)


async def _stop_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_stop(conn, args["lead_id"], args["reason"])


async def _suppress(conn: asyncpg.Connection, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return await suppress_lead(conn, args["lead_id"], ctx.command_run_id)


async def _suppress_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_suppress(conn, args["lead_id"])


async def _cancel(conn: asyncpg.Connection, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return await cancel_touch(conn, args["touch_id"], ctx.command_run_id)


async def _cancel_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_cancel(conn, args["touch_id"])


async def _retry(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await retry_reactions(conn, args.get("event_ids"))


async def _retry_preview(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await preview_retry(conn, args.get("event_ids"))


async def _funnel(conn: asyncpg.Connection, args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    return await report_funnel(conn, args["campaign_id"], args["days"])


INTENTS: dict[str, Intent] = {i.name: i for i in (
    Intent(SYSTEM_STATUS, NoArgs, False, _status, "the queue, touches, recent events and failures, last job runs"),
    Intent(LEAD_INSPECT, LeadArgs, False, _inspect,
           "a lead: contacts, suppression, next action, campaigns, open and recent touches, events, decisions"),
    Intent(LEAD_ENROLL, EnrollArgs, True, _enroll, "enroll a lead in a campaign (by id or name) at its first step",
           _enroll_preview, _enroll_campaign_by_ref),
    Intent(CAMPAIGN_LIST, NoArgs, False, _campaign_list, "the campaigns with status and per-step counts"),
    Intent(CAMPAIGN_PAUSE, CampaignArgs, True, _pause,
           "pause a campaign: no new touches, its queued and scheduled touches canceled (campaign_paused)",
           _pause_preview, _campaign_by_ref),
    Intent(CAMPAIGN_RESUME, CampaignArgs, True, _resume,
           "resume a paused campaign: active again, the touches the pause canceled created again",
           _resume_preview, _campaign_by_ref),
    Intent(LEAD_STOP, LeadStopArgs, True, _stop,
           "stop a lead's cadences (stop_reason = reason) and cancel its open touches", _stop_preview),
    Intent(LEAD_SUPPRESS, LeadArgs, True, _suppress,
           "never contact a lead again: do_not_contact, open touches canceled, cadences stopped", _suppress_preview),
    Intent(TOUCH_CANCEL, TouchArgs, True, _cancel, "cancel one queued or scheduled touch", _cancel_preview),
    Intent(REACTIONS_RETRY, RetryArgs, True, _retry,
           "queue reactions that were set aside again: event_ids, or all", _retry_preview),
    Intent(REPORT_FUNNEL, FunnelArgs, False, _funnel,
           "a campaign's funnel per step and channel over the last days (default 30): sent, delivered, replied, "
           "positive, unsubscribed, booked, and the rates", canonical=_campaign_by_ref),
)}
KNOWN_INTENTS: tuple[str, ...] = tuple(INTENTS)
WRITE_INTENTS: tuple[str, ...] = tuple(n for n, i in INTENTS.items() if i.writes)

# One English and one Spanish phrasing per intent, in the 422 and 503 answers (SPEC §14, §18).
EXAMPLES: dict[str, tuple[str, ...]] = {
    SYSTEM_STATUS: ("system status", "estado del sistema"),
    LEAD_INSPECT: ("inspect lead <lead id>", "inspecciona el lead <lead id>"),
    LEAD_ENROLL: ("enroll lead <lead id> in campaign <campaign id or name>",
                  "inscribe al lead <lead id> en la campaña <id o nombre de la campaña>"),
    CAMPAIGN_LIST: ("list campaigns", "lista las campañas"),
    CAMPAIGN_PAUSE: ("pause campaign <name or id>", "pausa la campaña <nombre o id>"),
    CAMPAIGN_RESUME: ("resume campaign <name or id>", "reanuda la campaña <nombre o id>"),
    LEAD_STOP: ("stop lead <lead id> because <reason>", "deja de contactar al lead <lead id> porque <motivo>"),
    LEAD_SUPPRESS: ("do not contact lead <lead id>", "no contactar al lead <lead id>"),
    TOUCH_CANCEL: ("cancel touch <touch id>", "cancela el touch <touch id>"),
    REACTIONS_RETRY: ("retry reactions", "reintenta las reacciones"),
    REPORT_FUNNEL: ("funnel for campaign <name or id> last 7 days", "embudo de la campaña <nombre o id> últimos 7 días"),
}


def check_args(name: Any, args: Any) -> dict[str, Any]:
    """The intent's arguments checked by its schema: ids as UUIDs, defaults filled in. An unknown intent, args that
    are not an object, a missing, malformed or unexpected argument is a CommandError (422) that says which."""
    intent = INTENTS.get(name) if isinstance(name, str) else None
    if intent is None:
        raise CommandError(f"unknown intent {str(name)[:60]!r}")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise CommandError("args must be an object")
    try:
        checked = intent.schema.model_validate(dict(args))
    except ValidationError as exc:
        raise CommandError(_why(intent.name, exc)) from None
    return checked.model_dump(exclude_none=True)


def _why(name: str, exc: ValidationError) -> str:
    errors = exc.errors()
    extra = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        return f"{name} takes no argument {', '.join(map(repr, extra))}"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        return f"{name} needs {where}"
    if first["type"].startswith("uuid"):
        return f"{where} must be a uuid, got {_shown(first.get('input'))}"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    return repr(str(value)[:60])
