"""Why a touch did not go out. Every failure carries a code, a human reason and a class (SPEC §4)."""

from __future__ import annotations

from typing import Literal

FailureClass = Literal["transient", "permanent"]


class TouchFailure(Exception):
    """Fails one touch (never the queue): becomes touch_runs.error and a touch_failed event."""

    def __init__(self, error_code: str, error: str, failure_class: FailureClass = "permanent") -> None:
        super().__init__(f"{error_code}: {error}")
        self.error_code = error_code
        self.error = error
        self.failure_class: FailureClass = failure_class


class ProviderError(TouchFailure):
    """A provider answered with an error (or did not answer). ``retryable`` errors are retried inside the
    lease; ``retry_after`` honours the provider's Retry-After header."""

    def __init__(
        self,
        error_code: str,
        error: str,
        failure_class: FailureClass,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(error_code, error, failure_class)
        self.retryable = retryable
        self.retry_after = retry_after
        self.http_status = http_status
