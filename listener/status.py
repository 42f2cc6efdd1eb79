"""Moved to `listener.intents.status` (one implementation shared by the CLI, the API and Command OS)."""

from listener.intents.status import system_status

__all__ = ["system_status"]
