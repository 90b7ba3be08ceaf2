"""One error hierarchy for Notify.

Every failure Notify raises on purpose is a ``NotifyError``. Entry points (CLI, Lambda handlers,
the gateway) map the subclasses to exit codes or HTTP statuses in one place each, so the domain never
needs to know how it is being served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class NotifyError(Exception):
    """Base class of every error Notify raises deliberately."""

    http_status: int = 500


class ConfigurationError(NotifyError):
    """Settings are missing or contradict each other (caught at start-up, never mid-request)."""

    http_status = 500


class ValidationError(NotifyError):
    """Input from outside (a file, an event, a request) does not satisfy its contract."""

    http_status = 400


class NotFoundError(NotifyError):
    """The entity asked for does not exist."""

    http_status = 404


class ConditionFailedError(NotifyError):
    """A conditional write lost: the item was already claimed, or changed under us."""

    http_status = 409


class CeilingReachedError(ConditionFailedError):
    """Counts not added because one would take its row past its ceiling (``over``: those rows): another
    writer got there first (a campaign budget planned by a concurrent batch). None of the counts is added."""

    def __init__(self, message: str, *, over: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.over = list(over)


class PayloadTooLargeError(ValidationError):
    """A request body or batch is over its documented limit."""

    http_status = 413


class BackendError(NotifyError):
    """A backing service (SQLite, DynamoDB, Kafka, S3) failed in a way a retry may fix."""

    http_status = 503
    retry_after_s = 5  # the ``Retry-After`` of its 503: a client backs off instead of retrying at once


class DatabaseReplacedError(BackendError):
    """The path no longer names the database file this process opened (removed, or replaced by a restore): a
    write would go to a file nobody reads again. No retry helps; the process must be restarted."""


class DatabaseInUseError(ConditionFailedError):
    """Other processes have the database open, so it may not be replaced now: they would go on writing to the
    old file, and every write they acknowledged after that would be lost."""


class CountsNotAddedError(BackendError):
    """Counter increments that were not added (``remaining``: exactly those, for the caller to keep and add
    again: counts are not idempotent, so neither dropping nor re-adding all of them is right)."""

    def __init__(self, message: str, *, remaining: Mapping[tuple[str, str], int]) -> None:
        super().__init__(message)
        self.remaining = dict(remaining)


class UpdatesPartlyAppliedError(BackendError):
    """A batch of conditional updates (``Table.update_many``) the backend refused part-way: ``done`` holds the
    results of the first ``len(done)`` updates, which were applied (an item) or lost their condition (None);
    the update at ``len(done)`` failed and it and every later one were not applied (``__cause__``: its error).

    Why: DynamoDB applies a batch item by item, so an error in its middle (throttling, a 5xx) comes after some
    updates have landed. A caller whose updates are not idempotent (counter increments) must not redo those,
    and could not tell them apart from a plain error (SQLite's one transaction applies all or none)."""

    def __init__(self, message: str, *, done: Sequence[Any]) -> None:
        super().__init__(message)
        self.done = list(done)


class UnauthorizedError(NotifyError):
    """No credential, or one that is unknown, expired or revoked (the caller must present a valid key)."""

    http_status = 401


class ForbiddenError(NotifyError):
    """A valid credential without the scope the action needs."""

    http_status = 403


class RateLimitedError(NotifyError):
    """A caller over its request rate; ``retry_after_s`` says when a retry will be admitted."""

    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnsupportedMediaTypeError(ValidationError):
    """A request body in a content type the route does not read (it reads JSON)."""

    http_status = 415


class InvalidTokenError(NotFoundError):
    """A signed token (tracking link) that does not verify: answered exactly like an unknown link (404),
    so a forger learns nothing about which ids exist or which part of the token was wrong."""
