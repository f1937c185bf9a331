"""`POST /worker/exchange` (protocol 2, docs/protocol.md): finish any number of jobs and claim
the next ones in one request, so a busy worker spends one round trip per job, and at
concurrency above 1 the finishes and claims of several jobs share one request.

Each finish is applied on its own and answered on its own (one stale or refused report does
not affect the others); the claim comes after them. A request that carries finishes never
holds: its claim checks the queue once, so the finishes' answers are never delayed by a
long-poll.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..protocol import DEFAULT_CLAIM_WAIT_MS, MAX_POLL_MS, PROTOCOL_VERSION, WORKER_EXCHANGE
from .config import EndpointConfig
from .expect import expect_within
from .http import ApiError, field_int, field_str, read_object, respond
from .state import ServiceState
from .worker_api import (
    _OUTPUT_OVERHEAD,
    MAX_CLAIM,
    MAX_SLOTS,
    PREFIX,
    claim_jobs,
    finish_one,
    routes,
    worker_op,
)

#: Finishes one exchange may carry (as many as a claim may return).
MAX_FINISHES = MAX_CLAIM


async def _finish_entry(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, entry: Any
) -> dict[str, Any]:
    """One entry's answer: `{"id", "status"}`, or `{"id", "error", "code", ...}` when refused."""
    job_id = entry.get("id") if isinstance(entry, dict) else None
    try:
        if not isinstance(entry, dict):
            raise ApiError(400, "each finish must be an object {id, token, state, ...}")
        if not isinstance(job_id, str) or not job_id:
            raise ApiError(400, "each finish needs an id (the job id, a non-empty string)")
        return await finish_one(state, endpoint, cfg, job_id, entry)
    except ApiError as exc:
        return {"id": job_id, "code": exc.status, **exc.body()}


@routes.post(
    PREFIX + WORKER_EXCHANGE, expect_handler=expect_within(lambda cfg: cfg.result_limit + _OUTPUT_OVERHEAD)
)
@worker_op
async def exchange(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    body = await read_object(request, cfg.result_limit + _OUTPUT_OVERHEAD, "exchange")
    worker_id = field_str(body, "worker_id", required=True)
    assert worker_id is not None
    finishes = body.get("finish", [])
    if not isinstance(finishes, list):
        raise ApiError(400, "finish must be a list of {id, token, state, ...}")
    if len(finishes) > MAX_FINISHES:
        raise ApiError(400, f"finish carries {len(finishes)} reports; at most {MAX_FINISHES} per request")
    max_jobs = field_int(body, "max", default=0, minimum=0, maximum=MAX_CLAIM)
    wait_ms = field_int(body, "wait_ms", default=DEFAULT_CLAIM_WAIT_MS, minimum=0, cap=MAX_POLL_MS)
    concurrency = field_int(body, "concurrency", default=None, minimum=0, maximum=MAX_SLOTS)
    assert max_jobs is not None and wait_ms is not None
    # Finishes of different jobs are independent: applied together, so that an embedded store
    # commits them in one transaction.
    finished = list(await asyncio.gather(*(_finish_entry(state, endpoint, cfg, e) for e in finishes)))
    jobs: list[dict[str, Any]] = []
    if max_jobs > 0:
        hold = 0 if finishes else wait_ms
        jobs = await claim_jobs(request, state, endpoint, worker_id, max_jobs, hold, concurrency)
    return respond(
        request,
        {
            "finished": finished,
            "jobs": jobs,
            "lease_ms": state.config.lease_ms,
            "result_limit": cfg.result_limit,
            "protocol": PROTOCOL_VERSION,
        },
    )
