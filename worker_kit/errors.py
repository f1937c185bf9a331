"""Exceptions raised by worker_kit.

    WorkerKitError
    ├── ConfigError(ValueError)          bad settings, flags or config file
    ├── MissingDependency(ImportError)   an optional extra is not installed
    ├── StorageError                     a backend failed
    │   ├── JobNotFound(LookupError)     unknown or expired job id
    │   ├── StaleLease                   a report carried a token that is no longer current
    │   ├── JobConflict                  the job's state forbids the operation (retry of a COMPLETED job...)
    │   ├── SequenceGap                  an output item skipped a sequence number
    │   ├── QueueFull                    submit refused: the endpoint's queue is over its limit
    │   └── StoreUnavailable             the store cannot be reached (the service answers 503)
    ├── ServiceError                     the service answered an error (status, message)
    │   ├── AuthError                    401 / 403
    │   ├── NotFound(JobNotFound)        404
    │   ├── RateLimited                  429 (retry_after seconds)
    │   └── PayloadTooLarge              413
    ├── ServiceUnavailable(ConnectionError)  the service could not be reached
    └── JobError                         a job ended in a state other than COMPLETED
        ├── JobFailed
        ├── JobTimedOut(TimeoutError)
        └── JobCancelled
"""

from __future__ import annotations

from typing import Any


class WorkerKitError(Exception):
    pass


class ConfigError(WorkerKitError, ValueError):
    pass


class MissingDependency(WorkerKitError, ImportError):
    pass


class StorageError(WorkerKitError):
    pass


class JobNotFound(StorageError, LookupError):
    pass


class StaleLease(StorageError):
    """The lease token is not the job's current one: the job was requeued, ended or cancelled."""

    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class JobConflict(StorageError):
    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class SequenceGap(StorageError):
    def __init__(self, message: str, expected: int) -> None:
        super().__init__(message)
        self.expected = expected


class QueueFull(StorageError):
    """submit(queue_limit=N) found more than N jobs queued; nothing was stored."""

    def __init__(self, message: str, depth: int) -> None:
        super().__init__(message)
        self.depth = depth


class StoreUnavailable(StorageError):
    """The store cannot be reached right now (a network error, a server restarting); the
    operation may or may not have been applied. The service answers 503 with Retry-After."""


class ServiceError(WorkerKitError):
    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class AuthError(ServiceError):
    pass


class RateLimited(ServiceError):
    def __init__(self, status: int, message: str, body: Any = None, retry_after: float | None = None) -> None:
        super().__init__(status, message, body)
        self.retry_after = retry_after


class PayloadTooLarge(ServiceError):
    pass


class NotFound(ServiceError, JobNotFound):
    """404: the job id is unknown, or its result expired (catchable as worker_kit.JobNotFound)."""


class ServiceUnavailable(WorkerKitError, ConnectionError):
    pass


def error_for_status(
    status: int, message: str, body: Any = None, *, retry_after: float | None = None
) -> ServiceError:
    """The exception for an HTTP error answer: the one mapping the client and the worker share."""
    if status in (401, 403):
        return AuthError(status, message, body)
    if status == 404:
        return NotFound(status, message, body)
    if status == 413:
        return PayloadTooLarge(status, message, body)
    if status == 429:
        return RateLimited(status, message, body, retry_after=retry_after)
    return ServiceError(status, message, body)


class JobError(WorkerKitError):
    """A job ended in a state other than COMPLETED; `status` is its final status JSON."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.job_id = status.get("id")
        self.error = status.get("error")
        super().__init__(f"job {self.job_id} {status.get('status')}: {self.error or ''}".rstrip(": "))


class JobFailed(JobError):
    pass


class JobTimedOut(JobError, TimeoutError):
    pass


class JobCancelled(JobError):
    pass
