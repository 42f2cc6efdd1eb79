"""What an intent answers when it cannot do what was asked. Each error knows its HTTP status, so the API, the CLI
and the console say the same thing: CommandError (422, the command itself is not understood or its arguments are
wrong), NotFound (404), a conflict with the data (409: an ambiguous name with its candidates, a touch that is no
longer cancelable with its status, a lead already enrolled, an archived campaign), ModelUnavailable (503)."""

from __future__ import annotations

from typing import Any


class CommandError(ValueError):
    """A command that cannot be run as given (the API answers 422 with `known_intents`)."""


class NoMatch(CommandError):
    """The deterministic resolver found no intent in the text: the only case in which the model is asked."""


class ModelUnavailable(Exception):
    """The optional model (REVENUE_ASI_LLM_URL) did not answer in time or could not be reached (503)."""


class IntentError(Exception):
    """An intent that cannot be done on the data as it is; the message says why. 409 unless a subclass says
    otherwise; `details` go into the API's answer beside `error` (e.g. `candidates`, `status`)."""

    status = 409

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class NotFound(IntentError):
    """The campaign, lead, touch or event named does not exist (404)."""

    status = 404


class Ambiguous(IntentError):
    """A name that matches more than one campaign (409 with `candidates`)."""


class NotCancelable(IntentError):
    """A touch that is not queued or scheduled any more (409 with its `status`)."""
