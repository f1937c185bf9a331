"""Ending jobs: `POST /worker/jobs/{id}/finish` (protocol 1) and `POST /worker/exchange`
(protocol 2, docs/protocol.md), which finishes any number of jobs and claims the next ones in
one request, so a busy worker spends one round trip per job, and at concurrency above 1 the
finishes and claims of several jobs share one request.

In an exchange each finish is applied on its own and answered on its own (one stale or
refused report does not affect the others); the claim comes after them, in the same storage
call (`Storage.exchange`: one transaction on SQLite). A request that carries finishes never
holds: its claim checks the queue once, so the finishes' answers are never delayed by a
long-poll.
"""

from __future__ import annotations

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
from ..storage.base import FINISH_ANSWERS, Finish
from .config import EndpointConfig
from .expect import expect_within
from .http import ApiError, body_content_type, client_gone, job_id_of, read_body, respond
from .state import ServiceState
from .worker_api import PREFIX, claim_jobs, claim_reply, handed_out, report_limit, routes, worker_op


def finish_order(cfg: EndpointConfig, job_id: str, report: FinishReport) -> Finish:
    """What storage is asked to do for one finish report. Raises ApiError (413) for a result over
    the endpoint's limit."""
    final = report.final
    if report.unstorable is not None:
        # The report is well formed but its result can never be answered: the job cannot
        # complete, so it ends FAILED saying why, rather than wait for its lease to run out.
        error = f"the worker's result could not be stored: finish: {report.unstorable}"
        return Finish(job_id, report.token, JobState.FAILED, error=error,
                      error_detail={"type": "UnstorableResult", "message": error})  # fmt: skip
    size = len(final.output) if final.output is not None else 0
    if size > cfg.result_limit:
        raise ApiError(
            413,
            f"the result is {size} bytes, over this endpoint's result limit of {cfg.result_limit} bytes",
            limit=cfg.result_limit,
        )
    # By position (keywords would make a dict per finish): Finish's field order.
    return Finish(job_id, report.token, final.state, final.output, final.error, final.error_detail,
                  report.items)  # fmt: skip


def finish_answer(
    state: ServiceState, report: FinishReport, order: Finish, outcome: JobRecord | Exception
) -> dict[str, Any]:
    """The answer `{"id", "status"}` to a finish storage applied (`outcome`: the job as it ended,
    or what storage refused it with). Raises ApiError for a stale or out-of-sequence report."""
    job_id = order.job_id
    if isinstance(outcome, (StaleLease, JobNotFound)):
        raise stale(job_id, outcome)
    if isinstance(outcome, SequenceGap):
        raise ApiError(
            409, str(outcome) or f"trailing items must continue from seq {outcome.expected}",
            expected=outcome.expected,
        )  # fmt: skip
    if isinstance(outcome, Exception):
        raise outcome
    job = outcome
    if report.unstorable is not None:
        state.job_ended(job, "its worker's result could not be stored")
        return FinishAnswer.encode(job.id, job.state, job.error)
    if job.state is not order.state:  # this token already ended the job another way; the first report stands
        raise stale(job_id, f"job {job_id} already ended as {job.state.value}; this {order.state.value} "
                    "report is ignored", job.state.value)  # fmt: skip
    state.job_ended(job, f"reported by worker {job.worker_id}")
    return FinishAnswer.encode(job.id, job.state)


async def finish_one(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, job_id: str, report: FinishReport
) -> dict[str, Any]:
    """Apply one finish report (/worker/jobs/{id}/finish); its answer `{"id", "status"}`.

    Raises ApiError for a report that is too large, stale or out of sequence."""
    order = finish_order(cfg, job_id, report)
    outcome: JobRecord | Exception
    try:
        outcome = await state.storage.finish(
            endpoint, job_id, order.token, order.state, output=order.output, error=order.error,
            error_detail=order.error_detail, items=order.items,
        )  # fmt: skip
    except FINISH_ANSWERS as exc:
        outcome = exc
    return finish_answer(state, report, order, outcome)


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


def _entry_report(entry: Any, payloads: Payloads) -> tuple[str, FinishReport]:
    """One exchange entry's job id and report. Raises ApiError for a malformed entry."""
    if not isinstance(entry, dict):
        raise ApiError(400, "each finish must be an object {id, token, state, ...}")
    job_id = entry.get("id")
    if not isinstance(job_id, str) or not job_id:
        raise ApiError(400, "each finish needs an id (the job id, a non-empty string)")
    if not valid_job_id(job_id):
        raise ApiError(404, f"no such job: {JOB_ID_RULE}")
    return job_id, FinishReport.decode(entry, payloads)


@routes.post(PREFIX + WORKER_EXCHANGE, expect_handler=expect_within(report_limit))
@worker_op
async def exchange(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    raw = await read_body(request, report_limit(cfg), "exchange")
    body, payloads = decode_report(raw, body_content_type(request), "exchange")
    ask = ExchangeRequest.decode(body)
    # Each entry is answered on its own: a malformed, too large or refused one does not affect
    # the others. The rest go to storage together with the claim, in one call.
    answers: list[dict[str, Any]] = []
    applied: list[tuple[int, FinishReport, Finish]] = []
    carried: set[str] = set()
    for entry in ask.finish:
        job_id = entry.get("id") if isinstance(entry, dict) else None
        try:
            job_id, report = _entry_report(entry, payloads)
            if job_id in carried:
                # Storage would take the second as a repeat of the first and keep only the first
                # (its output, or items the second carries): say so rather than drop them.
                raise ApiError(409, f"this exchange already carries a finish of job {job_id}; "
                               "one finish per job per request")  # fmt: skip
            carried.add(job_id)
            applied.append((len(answers), report, finish_order(cfg, job_id, report)))
            answers.append({})
        except ApiError as exc:
            answers.append(exc.entry(job_id))
    jobs: list[JobRecord] = []
    if applied:
        # A request that carries finishes never holds: its claim looks once, so the finishes'
        # answers are never delayed by a long-poll.
        max_jobs = 0 if client_gone(request) else ask.max
        outcomes, jobs = await state.storage.exchange(
            endpoint, [order for _, _, order in applied], ask.worker_id, max_jobs, state.config.lease_ms,
            concurrency=ask.concurrency, max_bytes=state.config.claim_max_bytes,
        )  # fmt: skip
        for (at, report, order), outcome in zip(applied, outcomes, strict=True):
            try:
                answers[at] = finish_answer(state, report, order, outcome)
            except ApiError as exc:
                answers[at] = exc.entry(order.job_id)
        jobs = await handed_out(request, state, endpoint, ask.worker_id, jobs)
    elif ask.max > 0:
        wait_ms = 0 if ask.finish else ask.wait_ms
        jobs = await claim_jobs(request, state, endpoint, ask.worker_id, ask.max, wait_ms, ask.concurrency)
    reply = ClaimAnswer.encode(state.config.lease_ms, cfg.result_limit, answers)
    return await claim_reply(request, state, endpoint, jobs, reply)
