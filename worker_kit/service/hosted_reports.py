"""Reading and applying the reports of hosted-protocol workers (job-done, job-stream; hosted_api.py).

That protocol has no fencing tokens or sequence numbers: a report counts only while the job is
IN_PROGRESS under the reporting worker id, and chunks and progress get the job's next sequence
number (under a per-job lock in one replica, re-read on a gap across replicas).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import JobNotFound, SequenceGap, StaleLease
from ..job import JobRecord, JobState
from ..protocol import REPORT_OVERHEAD, HostedReport, OutputItem, pack, stale
from ..protocol.reports import decode_body
from .config import EndpointConfig
from .hosted_state import HOSTED
from .http import ApiError, read_body
from .state import ServiceState

#: Bytes a report body may have beyond the endpoint's result limit.
_OVERHEAD = REPORT_OVERHEAD


async def report_body(request: web.Request, cfg: EndpointConfig, what: str) -> dict[str, Any]:
    raw = await read_body(request, cfg.result_limit + _OVERHEAD, what)
    return decode_body(raw, None, what)  # JSON whatever the Content-Type: the SDK sends form-urlencoded


async def current(
    state: ServiceState, endpoint: str, worker_id: str, job_id: str
) -> tuple[JobRecord, str | None]:
    """The job and the token this worker holds for it (None when it holds none)."""
    job = await state.storage.get(endpoint, job_id)
    if job is None:
        await state.storage.drop_leases(endpoint, worker_id, [job_id])
        raise ApiError(404, f"job {job_id} not found (unknown, purged or past its retention)")
    token = job.token if job.worker_id == worker_id and job.state is JobState.IN_PROGRESS else None
    return job, token


def not_held(job: JobRecord, worker_id: str) -> ApiError:
    """The 409 stale answer of a report from a worker that does not hold the job (protocol.stale)."""
    state = job.state.value
    return stale(job.id, f"job {job.id} is {state} and not held by worker {worker_id}; report ignored", state)


async def append(
    state: ServiceState, endpoint: str, job: JobRecord, token: str, kind: str, data: Any
) -> None:
    for _ in range(3):  # another replica may have appended in between: re-read and go on
        try:
            await state.storage.append_output(endpoint, job.id, token, [OutputItem(job.next_seq, kind, data)])
            return
        except SequenceGap as exc:
            job.next_seq = exc.expected
    raise ApiError(409, f"could not order output of job {job.id}; retry")


def error_fields(error: Any) -> tuple[str, dict[str, Any] | None]:
    """The SDK sends a handler exception as a JSON string of error_type/error_message/error_traceback."""
    if not isinstance(error, str):
        return json.dumps(error, default=str), None
    try:
        info = json.loads(error)
    except ValueError:
        return error, None
    if not isinstance(info, dict) or "error_message" not in info:
        return error, None
    kind = str(info.get("error_type", "Exception")).removeprefix("<class '").removesuffix("'>")
    message = str(info["error_message"])
    return f"{kind}: {message}", {
        "type": kind,
        "message": message,
        "traceback": str(info.get("error_traceback", "")),
    }


def outcome(
    report: HostedReport, cfg: EndpointConfig, unstorable: str | None
) -> tuple[JobState, str | None, dict[str, Any] | None, Any]:
    """A job-done result's (state, error, error_detail, output): FAILED saying why when the result
    can never be answered or is over the result limit, else as the worker reported it."""
    output = report.output
    if unstorable is not None:  # the result can never be answered: the job cannot complete
        return JobState.FAILED, f"the worker's result could not be stored: job-done: {unstorable}", None, None
    if output is not None and len(pack(output)) > cfg.result_limit:
        too_large = f"the result is over this endpoint's result limit of {cfg.result_limit} bytes"
        return JobState.FAILED, too_large, None, None
    if report.error:
        error, detail = error_fields(report.error)
        return JobState.FAILED, error, detail, output
    return JobState.COMPLETED, None, None, output


async def fail_stream(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, job_id: str, reason: str
) -> None:
    """A chunk that can never be answered: the job's stream would silently miss it, so the job ends
    FAILED saying why, and the worker is told with a 400."""
    hosted = request.app[HOSTED]
    error = f"a stream chunk could not be stored: {reason}"
    async with hosted.lock(job_id):
        _, token = await current(state, endpoint, worker_id, job_id)
        if token is not None:
            try:
                ended = await state.storage.finish(endpoint, job_id, token, JobState.FAILED, error=error)
            except (StaleLease, JobNotFound):
                pass
            else:
                await state.storage.drop_leases(endpoint, worker_id, [job_id])
                state.job_ended(ended, f"hosted-protocol worker {worker_id} sent an unstorable chunk")
    raise ApiError(400, f"{reason}; the job ends FAILED")
