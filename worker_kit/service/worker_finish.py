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
from ..job import JobRecord, JobState
from ..packed import Payloads
from ..protocol import (
    WORKER_EXCHANGE,
    WORKER_FINISH,
    ClaimAnswer,
    ExchangeRequest,
    FinishAnswer,
    FinishReport,
    decode_report,
    stale,
)
from .config import EndpointConfig
from .expect import expect_within
from .http import ApiError, body_content_type, job_id_of, read_body, respond
from .state import ServiceState
from .worker_api import PREFIX, claim_jobs, claim_reply, report_limit, routes, worker_op


async def finish_one(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, job_id: str, report: FinishReport
) -> dict[str, Any]:
    """Apply one finish report; its answer `{"id", "status"}`.

    Raises ApiError for a report that is too large, stale or out of sequence.
    Shared by /worker/jobs/{id}/finish and /worker/exchange."""
    final = report.final
    if report.unstorable is not None:
        # The report is well formed but its result can never be answered: the job cannot
        # complete, so it ends FAILED saying why, rather than wait for its lease to run out.
        return await _fail_unstorable(state, endpoint, job_id, report.token, f"finish: {report.unstorable}")
    size = len(final.output) if final.output is not None else 0
    if size > cfg.result_limit:
        raise ApiError(
            413,
            f"the result is {size} bytes, over this endpoint's result limit of {cfg.result_limit} bytes",
            limit=cfg.result_limit,
        )
    try:
        job = await state.storage.finish(
            endpoint, job_id, report.token, final.state, output=final.output, error=final.error,
            error_detail=final.error_detail, items=report.items,
        )  # fmt: skip
    except (StaleLease, JobNotFound) as exc:
        raise stale(job_id, exc) from None
    except SequenceGap as exc:
        raise ApiError(
            409, str(exc) or f"trailing items must continue from seq {exc.expected}", expected=exc.expected
        ) from None
    if job.state is not final.state:  # this token already ended the job another way; the first report stands
        raise stale(job_id, f"job {job_id} already ended as {job.state.value}; this {final.state.value} "
                    "report is ignored", job.state.value)  # fmt: skip
    state.job_ended(job, f"reported by worker {job.worker_id}")
    return FinishAnswer.encode(job.id, job.state)


@routes.post(PREFIX + WORKER_FINISH, expect_handler=expect_within(report_limit))
@worker_op
async def finish(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    raw = await read_body(request, report_limit(cfg), "finish")
    body, payloads = decode_report(raw, body_content_type(request), "finish")
    report = FinishReport.decode(body, payloads)
    return respond(request, await finish_one(state, endpoint, cfg, job_id, report))


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
        raise stale(job_id, exc) from None
    except SequenceGap as exc:  # not reachable without items; kept for a clear answer
        raise ApiError(409, str(exc), expected=exc.expected) from None
    state.job_ended(job, "its worker's result could not be stored")
    return FinishAnswer.encode(job.id, job.state, job.error)


async def _finish_entry(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, entry: Any, payloads: Payloads
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
        return await finish_one(state, endpoint, cfg, job_id, FinishReport.decode(entry, payloads))
    except ApiError as exc:
        return exc.entry(job_id)


@routes.post(PREFIX + WORKER_EXCHANGE, expect_handler=expect_within(report_limit))
@worker_op
async def exchange(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    raw = await read_body(request, report_limit(cfg), "exchange")
    body, payloads = decode_report(raw, body_content_type(request), "exchange")
    ask = ExchangeRequest.decode(body)
    # Finishes of different jobs are independent: applied together, so that an embedded store
    # commits them in one transaction.
    finishing = [_finish_entry(state, endpoint, cfg, e, payloads) for e in ask.finish]
    jobs: list[JobRecord] = []
    if ask.finish and ask.max > 0:
        finished, jobs = await _finish_and_claim(request, state, endpoint, finishing, ask)
    else:
        finished = list(await asyncio.gather(*finishing))
        if ask.max > 0:
            jobs = await claim_jobs(request, state, endpoint, ask.worker_id, ask.max, ask.wait_ms,
                                    ask.concurrency)
    reply = ClaimAnswer.encode(state.config.lease_ms, cfg.result_limit, finished)
    return await claim_reply(request, state, endpoint, jobs, reply)


async def _finish_and_claim(
    request: web.Request, state: ServiceState, endpoint: str, finishing: list[Any], ask: ExchangeRequest
) -> tuple[list[dict[str, Any]], list[JobRecord]]:
    """An exchange's finishes and its claim (which does not hold: it carries finishes), started
    together: their writes are queued in the same loop turn, finishes first, so an embedded
    store applies them in that order in ONE transaction (one commit, one hand-over to its writer
    thread, where one after the other cost two). If a finish fails outright (not a refusal, which
    is its answer), the jobs the claim took go straight back to the queue.

    A lone finish (a worker at concurrency 1: every job) runs in this request's own task, ahead
    of the claim's, which it queues its write before; only the claim gets a task of its own."""
    several = asyncio.gather(*finishing, return_exceptions=True) if len(finishing) > 1 else None
    claim = asyncio.ensure_future(claim_jobs(request, state, endpoint, ask.worker_id, ask.max, 0,
                                             ask.concurrency))  # fmt: skip
    results: list[Any]
    try:
        if several is not None:
            results = list(await several)
        else:
            try:
                results = [await finishing[0]]
            except Exception as exc:  # as gather(return_exceptions=True) would hand it over
                results = [exc]
    except asyncio.CancelledError:
        claim.cancel()
        raise
    claimed: Any
    try:
        claimed = await claim
    except Exception as exc:  # as gather(return_exceptions=True) would hand it over
        claimed = exc
    failed = next((r for r in [*results, claimed] if isinstance(r, BaseException)), None)
    if failed is None:
        return results, claimed
    if not isinstance(claimed, BaseException):
        for job in claimed:
            if job.token is not None:
                await state.storage.release(endpoint, job.id, job.token)
    raise failed

