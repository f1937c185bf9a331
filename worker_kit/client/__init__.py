"""Client for a worker_kit endpoint (and for path-compatible hosted endpoints).

    from worker_kit.client import Endpoint
    with Endpoint("http://127.0.0.1:8000", "my-endpoint", api_key="...") as ep:
        print(ep.run_sync({"prompt": "hi"}, timeout=60))

`AsyncEndpoint` has the same names as coroutines. Failures raise the typed errors of
worker_kit.errors (JobFailed, AuthError, ServiceUnavailable, ...).
"""

from __future__ import annotations

from .async_api import AsyncEndpoint, AsyncJobHandle, result_of
from .errors import NotFound, WaitTimeout
from .signing import SIGNATURE_HEADER, sign_webhook, verify_webhook
from .sync_api import Endpoint, JobHandle

__all__ = [
    "SIGNATURE_HEADER",
    "AsyncEndpoint",
    "AsyncJobHandle",
    "Endpoint",
    "JobHandle",
    "NotFound",
    "WaitTimeout",
    "result_of",
    "sign_webhook",
    "verify_webhook",
]
