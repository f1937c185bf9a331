"""worker_kit: write one Python function, serve it as a scalable job endpoint.

The public names are imported lazily so that `import worker_kit` in a worker's
entrypoint costs almost nothing: a worker never loads the service, a client never
loads the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "handler": "worker_kit.worker.registry",
    "start": "worker_kit.worker.entrypoint",
    "Job": "worker_kit.worker.handler_job",
    "JobState": "worker_kit.job",
    "Endpoint": "worker_kit.client",
    "AsyncEndpoint": "worker_kit.client",
    "Field": "worker_kit.validation",
    "WorkerKitError": "worker_kit.errors",
    "ServiceError": "worker_kit.errors",
    "ServiceUnavailable": "worker_kit.errors",
    "AuthError": "worker_kit.errors",
    "RateLimited": "worker_kit.errors",
    "PayloadTooLarge": "worker_kit.errors",
    "JobError": "worker_kit.errors",
    "JobFailed": "worker_kit.errors",
    "JobTimedOut": "worker_kit.errors",
    "JobCancelled": "worker_kit.errors",
    "JobNotFound": "worker_kit.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worker_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .client import AsyncEndpoint, Endpoint
    from .errors import (
        AuthError,
        JobCancelled,
        JobError,
        JobFailed,
        JobNotFound,
        JobTimedOut,
        PayloadTooLarge,
        RateLimited,
        ServiceError,
        ServiceUnavailable,
        WorkerKitError,
    )
    from .job import JobState
    from .validation import Field
    from .worker.entrypoint import start
    from .worker.handler_job import Job
    from .worker.registry import handler
