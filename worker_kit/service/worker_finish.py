"""Ending jobs: `POST /worker/jobs/{id}/finish` (protocol 1) and `POST /worker/exchange`
(protocol 2, docs/protocol.md), which finishes any number of jobs and claims the next ones in
one request, so a busy worker spends one round trip per job, and at concurrency above 1 the
finishes and claims of several jobs share one request.

In an exchange each finish is applied on its own and answered on its own (one stale or
refused report does not affect the others); the claim comes after them. A request that
carries finishes never holds: its claim checks the queue once, so the finishes' answers are
never delayed by a long-poll.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..errors import JobNotFound, SequenceGap, StaleLease
from ..ids import JOB_ID_RULE, valid_job_id
from ..job import WORKER_FINAL_STATES, JobState
from ..portable import problem
from ..protocol import (
    DEFAULT_CLAIM_WAIT_MS,
    MAX_POLL_MS,
    PROTOCOL_VERSION,
    WORKER_EXCHANGE,
    WORKER_FINISH,
    decode,
    pack,
)
from .config import EndpointConfig
from .expect import expect_within
from .http import ApiError, body_content_type, field_int, field_str, job_id_of, read_body, respond
from .state import ServiceState
from .worker_api import (
    _OUTPUT_OVERHEAD,
    MAX_CLAIM,
    MAX_SLOTS,
    PREFIX,
    claim_jobs,
    claim_reply,
    parse_items,
    routes,
    stale,
    token_of,
    worker_op,
)

#: Finishes one exchange may carry (as many as a claim may return).
MAX_FINISHES = MAX_CLAIM


async def finish_one(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, job_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Apply one finish report `{token, state, output?, error?, error_detail?, items?}`; its answer.

    Raises ApiError for a report that is malformed, too large, stale or out of sequence.
    Shared by /worker/jobs/{id}/finish and /worker/exchange."""
    token = token_of(body)
    try:
        final = JobState(body.get("state"))
    except ValueError:
        final = None
    if final not in WORKER_FINAL_STATES:
        raise ApiError(400, f"state must be COMPLETED, FAILED or TIMED_OUT, not {body.get('state')!r}")
    error = body.get("error")
    if error is not None and not isinstance(error, str):
        raise ApiError(400, "error must be a string (a one-line reason); put details in error_detail")
    detail = body.get("error_detail")
    if detail is not None and not isinstance(detail, dict):
        raise ApiError(400, "error_detail must be an object {type, message, traceback}")
    if final is not JobState.COMPLETED and not error:
        error = f"the worker reported {final.value} without an error message"
    unstorable = problem(body, finite=False)
    if unstorable is not None:
        # The report is well formed but its result can never be answered: the job cannot
        # complete, so it ends FAILED saying why, rather than wait for its lease to run out.
        return await _fail_unstorable(state, endpoint, job_id, token, f"finish: {unstorable}")
    items = parse_items(body.get("items"))
    result = body.get("output")
    size = len(pack(result)) if result is not None else 0
    if size > cfg.result_limit:
        raise ApiError(
            413,
            f"the result is {size} bytes, over this endpoint's result limit of {cfg.result_limit} bytes",
            limit=cfg.result_limit,
        )
    try:
        job = await state.storage.finish(
            endpoint, job_id, token, final, output=result, error=error, error_detail=detail, items=items
        )
    except (StaleLease, JobNotFound) as exc:
        raise stale(exc, job_id) from None
    except SequenceGap as exc:
        raise ApiError(
            409, str(exc) or f"trailing items must continue from seq {exc.expected}", expected=exc.expected
        ) from None
    if job.state is not final:  # this token already ended the job another way; the first report stands
        raise ApiError(
            409,
            f"job {job_id} already ended as {job.state.value}; this {final.value} report is ignored",
            state=job.state.value,
            stale=True,
        )
    state.job_ended(job, f"reported by worker {job.worker_id}")
    return {"id": job.id, "status": job.state.value}


@routes.post(
    PREFIX + WORKER_FINISH, expect_handler=expect_within(lambda cfg: cfg.result_limit + _OUTPUT_OVERHEAD)
)
@worker_op
async def finish(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    raw = await read_body(request, cfg.result_limit + _OUTPUT_OVERHEAD, "finish")
    body = decode_report(raw, body_content_type(request), "finish")
    return respond(request, await finish_one(state, endpoint, cfg, job_id, body))


def decode_report(raw: bytes, content_type: str | None, what: str) -> dict[str, Any]:
    """A worker report's body as an object, not yet checked for portability (its result is
    checked by the route, which fails the job rather than refuse the report)."""
    try:
        body = decode(raw, content_type)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} body must be an object, not {type(body).__name__}")
    return body


async def _fail_unstorable(
    state: ServiceState, endpoint: str, job_id: str, token: str, reason: str
) -> dict[str, Any]:
    error = f"the worker's result could not be stored: {reason}"
    try:
        job = await state.storage.finish(
            endpoint, job_id, token, JobState.FAILED, error=error,
            error_detail={"type": "UnstorableResult", "message": error},
        )  # fmt: skip
    except (StaleLease, JobNotFound) as exc:
        raise stale(exc, job_id) from None
    except SequenceGap as exc:  # not reachable without items; kept for a clear answer
        raise ApiError(409, str(exc), expected=exc.expected) from None
    state.job_ended(job, "its worker's result could not be stored")
    return {"id": job.id, "status": job.state.value, "error": job.error}


async def _finish_entry(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, entry: Any
) -> dict[str, Any]:
    """One entry's answer: `{"id", "status"}`, or `{"id", "code", "error", ...}` when refused."""
    job_id = entry.get("id") if isinstance(entry, dict) else None
    try:
        if not isinstance(entry, dict):
            raise ApiError(400, "each finish must be an object {id, token, state, ...}")
        if not isinstance(job_id, str) or not job_id:
            raise ApiError(400, "each finish needs an id (the job id, a non-empty string)")
        if not valid_job_id(job_id):
            raise ApiError(404, f"no such job: {JOB_ID_RULE}")
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
    raw = await read_body(request, cfg.result_limit + _OUTPUT_OVERHEAD, "exchange")
    body = decode_report(raw, body_content_type(request), "exchange")
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
    jobs = []
    if max_jobs > 0:
        hold = 0 if finishes else wait_ms
        jobs = await claim_jobs(request, state, endpoint, worker_id, max_jobs, hold, concurrency)
    reply = {"finished": finished, "lease_ms": state.config.lease_ms, "result_limit": cfg.result_limit,
             "protocol": PROTOCOL_VERSION}
    return await claim_reply(request, state, endpoint, jobs, reply)
