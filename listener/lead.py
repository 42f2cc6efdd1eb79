"""Moved to `listener.intents.lead` (one implementation shared by the CLI, the API and Command OS)."""

from listener.intents.lead import LeadError, LeadNotFound, enroll_lead, inspect_lead, jsonable

__all__ = ["LeadError", "LeadNotFound", "enroll_lead", "inspect_lead", "jsonable"]
