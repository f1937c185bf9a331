"""The hosted serverless service's worker protocol, so workers built with its SDK run unchanged.

Routes (relative to /v2/{endpoint_id}, see /work/shared/reference/runpod-worker-protocol.md §1):
job-take, job-take-batch, job-stop, job-done, job-stream and ping. That protocol has no fencing
tokens or sequence numbers, so this module records in storage which jobs each worker id holds
(with their tokens: `Storage.hold_leases`, shared by every replica, so job-stop and ping renew
leases whatever replica handed the job out; no sticky routing) and fills both in from storage:
a report counts only while the job is IN_PROGRESS under that worker id, and chunks and progress
get the job's next sequence number (under a per-job lock in one replica, re-read on a gap
across replicas).

Its known defects are handled here rather than passed on: long-polls (never an immediate 204, which
makes SDK workers spin), no job handed to a request whose client has gone, bodies parsed as JSON
whatever their Content-Type says, progress arriving after the result ignored, `?`-less URL
templates tolerated, and cancels and timeouts sent on job-stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..errors import JobNotFound, SequenceGap, StaleLease
from ..job import MAX_CHUNK_BYTES, JobRecord, JobState, OutputItem
from ..portable import problem
from ..protocol import API_PREFIX, MAX_POLL_MS, STOP_LOST, decode, dumps_json, pack
from ..storage.base import StopSignal, queue_channel, worker_channel
from .config import EndpointConfig
from .http import ApiError, job_id_of, query_int, read_body, wait_until
from .state import ServiceState, authorized, job_log
from .unsendable import sendable

routes = web.RouteTableDef()
log = logging.getLogger("worker_kit.service.hosted")

PREFIX = API_PREFIX
#: job-take and job-stop hold this long by default; SDK workers cut requests at 90 s.
#: A template may carry `?wait_ms=N` to change it.
DEFAULT_HOLD_MS = 30_000
#: The most jobs one job-take-batch hands out.
MAX_BATCH = 100
#: A stop is sent again while the worker still lists its job, for at most this long after the job
#: ended: the hosted SDK drops a stop that arrives between a take and the start of the job's task.
STOP_REPEAT_S = 60.0
#: The SDK polls job-stop again at once after a 200: repeats of the same stop are this far apart.
STOP_REPEAT_GAP_S = 1.0
#: A ping that no longer lists a stopped job ends its repeats only this long after the job ended.
STOP_UNLISTED_GRACE_S = 5.0
_OVERHEAD = 4 * 1024 * 1024
#: A ping lists the jobs its worker runs; at most this many are looked up.
_MAX_LISTED = 256


@dataclass(slots=True)
class HostedState:
    #: Per-job locks ordering one replica's reports of a job (the held leases live in storage).
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(default_factory=weakref.WeakValueDictionary)
    #: (worker id, job id) -> when this replica last sent that stop: only paces the repeats, so
    #: per replica is enough (another replica may repeat a stop a little sooner).
    stops_sent: dict[tuple[str, str], float] = field(default_factory=dict)

    def lock(self, job_id: str) -> asyncio.Lock:
        lock = self.locks.get(job_id)
        if lock is None:
            lock = self.locks[job_id] = asyncio.Lock()
        return lock


HOSTED = web.AppKey("worker_kit_hosted", HostedState)

Handler = Callable[[web.Request, ServiceState, str, EndpointConfig, str], Awaitable[web.StreamResponse]]


def path_part(raw: str) -> str:
    # Templates without '?' make the SDK append "&isStream=false" or "&job_in_progress=0" to the path.
    return raw.split("&", 1)[0]


def hosted_op(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state, endpoint, cfg = authorized(request, "worker")
        worker_id = path_part(request.match_info["worker_id"])
        if not worker_id or len(worker_id) > 256 or problem(worker_id) is not None:
            raise ApiError(400, "the worker id in the path must be 1 to 256 characters of valid text")
        return await fn(request, state, endpoint, cfg, worker_id)

    handle.__name__ = fn.__name__
    return handle


def no_content() -> web.Response:
    return web.Response(status=204)


def json_response(body: Any) -> web.Response:
    # Strict JSON: NaN and Infinity a worker reported become null (protocol.dumps_json).
    return web.json_response(body, dumps=dumps_json)


def hold_s(request: web.Request) -> float:
    wait_ms = query_int(request, "wait_ms", default=DEFAULT_HOLD_MS, minimum=0, maximum=MAX_POLL_MS)
    assert wait_ms is not None
    return wait_ms / 1000


# -- taking jobs ------------------------------------------------------------------------------------


async def _take(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, max_jobs: int
) -> list[JobRecord]:
    lease_ms = state.config.lease_ms

    async def take() -> list[JobRecord] | None:
        if request.transport is None or request.transport.is_closing():
            return []  # the SDK gave up on this request; a job handed to it would be lost
        return await state.storage.claim(
            endpoint, worker_id, max_jobs, lease_ms, max_bytes=state.config.claim_max_bytes
        ) or None

    jobs = (
        await wait_until(state.storage, queue_channel(endpoint), hold_s(request), take, state.shutdown) or []
    )
    if jobs:
        await state.storage.hold_leases(endpoint, worker_id, {job.id: job.token or "" for job in jobs})
    for job in jobs:
        job_log(job, "job %s taken by hosted-protocol worker %s (attempt %d)", job.id, worker_id, job.attempt)
    return jobs


def hosted_job(job: JobRecord) -> dict[str, Any]:
    body: dict[str, Any] = {"id": job.id, "input": job.input}
    if job.webhook:
        body["webhook"] = job.webhook
    return body


@routes.get(PREFIX + "/job-take/{worker_id}")
@hosted_op
async def job_take(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    jobs = await _take(request, state, endpoint, worker_id, 1)
    forms = await _sendable(request, state, endpoint, worker_id, jobs)
    return json_response(forms[0]) if forms else no_content()


@routes.get(PREFIX + "/job-take-batch/{worker_id}")
@hosted_op
async def job_take_batch(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    batch = query_int(request, "batch_size", default=1, minimum=1, maximum=MAX_BATCH)
    assert batch is not None
    jobs = await _take(request, state, endpoint, worker_id, batch)
    forms = await _sendable(request, state, endpoint, worker_id, jobs)
    return json_response(forms) if forms else no_content()


async def _sendable(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, jobs: list[JobRecord]
) -> list[dict[str, Any]]:
    """The jobs' wire forms; one that cannot be encoded ends FAILED instead of failing the reply
    (see unsendable.py)."""
    forms = [hosted_job(job) for job in jobs]
    try:
        dumps_json(forms)
    except Exception:
        forms = await sendable(state, endpoint, jobs, hosted_job, lambda form: dumps_json(form).encode())
        kept = {form["id"] for form in forms}
        await state.storage.drop_leases(endpoint, worker_id, [job.id for job in jobs if job.id not in kept])
    return forms


# -- liveness and stops ----------------------------------------------------------------------------


async def _leases(state: ServiceState, endpoint: str, worker_id: str, listed: list[str]) -> dict[str, str]:
    """The worker's jobs with their tokens: those recorded as held, plus listed ones storage says
    it runs (taken before the record existed, e.g. by an older version of the service)."""
    leases = await state.storage.held_leases(endpoint, worker_id)
    found: dict[str, str] = {}
    for job_id in listed[:_MAX_LISTED]:
        if job_id and job_id not in leases:
            job = await state.storage.get(endpoint, job_id)
            if (
                job is not None
                and job.worker_id == worker_id
                and job.state is JobState.IN_PROGRESS
                and job.token
            ):
                found[job_id] = job.token
    if found:
        await state.storage.hold_leases(endpoint, worker_id, found)
    return {**leases, **found}


@routes.get(PREFIX + "/ping/{worker_id}")
@hosted_op
async def ping(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    listed = [j for j in request.query.get("job_id", "").split(",") if j]
    leases = await _leases(state, endpoint, worker_id, listed)
    stops = await state.storage.heartbeat(endpoint, worker_id, leases, state.config.lease_ms)
    # A stopped job the worker no longer lists has left it: its stop need not be repeated. Not at
    # once, though: the SDK's ping process reads its job list with a lag, so a job taken just now
    # may be missing from a ping while the worker is about to start it.
    gone = [s.job_id for s in stops if s.reason == STOP_LOST]
    for stop in stops:
        if stop.reason != STOP_LOST and stop.job_id not in listed:
            job = await state.storage.get(endpoint, stop.job_id)
            ended_at = None if job is None else job.finished_at
            if ended_at is None or time.time() - ended_at > STOP_UNLISTED_GRACE_S:
                gone.append(stop.job_id)
    await state.storage.drop_leases(endpoint, worker_id, gone)
    _forget_stops(request.app[HOSTED], worker_id, gone)
    return json_response({"status": "ok"})


@routes.get(PREFIX + "/job-stop/{worker_id}")
@hosted_op
async def job_stop(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    """Renews the worker's leases (SDK workers poll this continuously) and long-polls for stops.

    A cancelled or timed-out job's stop is repeated, STOP_REPEAT_GAP_S apart, until the worker's
    pings stop listing the job or STOP_REPEAT_S after it ended (docs/service.md); a stop for a
    lease the worker lost is sent once."""
    hosted = request.app[HOSTED]
    loop = asyncio.get_running_loop()

    async def stops() -> list[StopSignal] | None:
        leases = await _leases(state, endpoint, worker_id, [])
        found = await state.storage.heartbeat(endpoint, worker_id, leases, state.config.lease_ms)
        expired = await _past_repeat(state, endpoint, found)
        if expired:
            await state.storage.drop_leases(endpoint, worker_id, expired)
            _forget_stops(hosted, worker_id, expired)
        found = [s for s in found if s.job_id not in expired]
        due = [s for s in found if loop.time() - hosted.stops_sent.get((worker_id, s.job_id), -1e9)
               >= STOP_REPEAT_GAP_S]
        if found and not due:  # only repeats, sent just now: pace them instead of holding a full poll
            await asyncio.sleep(STOP_REPEAT_GAP_S)
            return found
        return due or None

    found = await wait_until(
        state.storage, worker_channel(endpoint, worker_id), hold_s(request), stops, state.shutdown
    )
    if not found:
        return no_content()
    lost = [s.job_id for s in found if s.reason == STOP_LOST]
    await state.storage.drop_leases(endpoint, worker_id, lost)
    _forget_stops(hosted, worker_id, lost)
    for s in found:
        if s.reason != STOP_LOST:
            hosted.stops_sent[(worker_id, s.job_id)] = loop.time()
    return json_response({"jobsToStop": [s.job_id for s in found]})


async def _past_repeat(state: ServiceState, endpoint: str, stops: list[StopSignal]) -> list[str]:
    """The stopped jobs whose stop is no longer repeated: ended over STOP_REPEAT_S ago, or gone."""
    now, past = time.time(), []
    for stop in stops:
        if stop.reason == STOP_LOST:
            continue
        job = await state.storage.get(endpoint, stop.job_id)
        if job is None or (job.finished_at is not None and now - job.finished_at > STOP_REPEAT_S):
            past.append(stop.job_id)
    return past


def _forget_stops(hosted: HostedState, worker_id: str, job_ids: list[str]) -> None:
    for job_id in job_ids:
        hosted.stops_sent.pop((worker_id, job_id), None)


# -- reports ----------------------------------------------------------------------------------------


async def _report_body(request: web.Request, cfg: EndpointConfig, what: str) -> dict[str, Any]:
    raw = await read_body(request, cfg.result_limit + _OVERHEAD, what)
    try:
        body = decode(raw, None)  # JSON whatever the Content-Type: the SDK sends form-urlencoded
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} body must be a JSON object")
    return body


async def _current(
    state: ServiceState, endpoint: str, worker_id: str, job_id: str
) -> tuple[JobRecord, str | None]:
    """The job and the token this worker holds for it (None when it holds none)."""
    job = await state.storage.get(endpoint, job_id)
    if job is None:
        await state.storage.drop_leases(endpoint, worker_id, [job_id])
        raise ApiError(404, f"job {job_id} not found (unknown, purged or past its retention)")
    token = job.token if job.worker_id == worker_id and job.state is JobState.IN_PROGRESS else None
    return job, token


def _stale(job: JobRecord, worker_id: str) -> ApiError:
    return ApiError(
        409,
        f"job {job.id} is {job.state.value} and not held by worker {worker_id}; report ignored",
        state=job.state.value,
        stale=True,
    )


async def _append(
    state: ServiceState, endpoint: str, job: JobRecord, token: str, kind: str, data: Any
) -> None:
    for _ in range(3):  # another replica may have appended in between: re-read and go on
        try:
            await state.storage.append_output(endpoint, job.id, token, [OutputItem(job.next_seq, kind, data)])
            return
        except SequenceGap as exc:
            job.next_seq = exc.expected
    raise ApiError(409, f"could not order output of job {job.id}; retry")


def _error_fields(error: Any) -> tuple[str, dict[str, Any] | None]:
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


@routes.post(PREFIX + "/job-done/{worker_id}/{job_id}")
@hosted_op
async def job_done(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    hosted = request.app[HOSTED]
    job_id = job_id_of(request, path_part(request.match_info["job_id"]))
    body = await _report_body(request, cfg, "job-done")
    async with hosted.lock(job_id):
        job, token = await _current(state, endpoint, worker_id, job_id)
        unstorable = problem(body, finite=False)
        if body.get("status") == JobState.IN_PROGRESS.value:  # a progress update
            if token is None:
                return json_response({"ignored": f"job is {job.state.value}"})  # late progress is expected
            if unstorable is not None:  # progress is transient: refuse it, the job goes on
                raise ApiError(400, f"job-done: progress refused: {unstorable}")
            try:
                await _append(state, endpoint, job, token, "progress", body.get("output"))
            except (StaleLease, JobNotFound):
                return json_response({"ignored": "job ended"})
            return json_response({"status": "ok"})
        if token is None:
            raise _stale(job, worker_id)
        output = body.get("output")
        if unstorable is not None:  # the result can never be answered: the job cannot complete
            final, detail, output = JobState.FAILED, None, None
            error = f"the worker's result could not be stored: job-done: {unstorable}"
        elif output is not None and len(pack(output)) > cfg.result_limit:
            final, error, detail, output = (
                JobState.FAILED,
                f"the result is over this endpoint's result limit of {cfg.result_limit} bytes",
                None,
                None,
            )
        elif body.get("error"):
            final, (error, detail) = JobState.FAILED, _error_fields(body["error"])
        else:
            final, error, detail = JobState.COMPLETED, None, None
        try:
            ended = await state.storage.finish(
                endpoint, job_id, token, final, output=output, error=error, error_detail=detail
            )
        except (StaleLease, JobNotFound):
            raise _stale(job, worker_id) from None
    await state.storage.drop_leases(endpoint, worker_id, [job_id])
    state.job_ended(ended, f"reported by hosted-protocol worker {worker_id}")
    return json_response({"status": ended.state.value})


@routes.post(PREFIX + "/job-stream/{worker_id}/{job_id}")
@hosted_op
async def job_stream(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    hosted = request.app[HOSTED]
    job_id = job_id_of(request, path_part(request.match_info["job_id"]))
    body = await _report_body(request, cfg, "job-stream")
    chunk = body.get("output")
    unstorable = problem(body, finite=False)
    if unstorable is not None:
        await _fail_stream(request, state, endpoint, worker_id, job_id, f"job-stream: {unstorable}")
    size = len(pack(chunk))
    if size > MAX_CHUNK_BYTES:
        raise ApiError(
            413, f"stream chunk is {size} bytes, over the limit of {MAX_CHUNK_BYTES}", limit=MAX_CHUNK_BYTES
        )
    async with hosted.lock(job_id):
        job, token = await _current(state, endpoint, worker_id, job_id)
        if token is None:
            raise _stale(job, worker_id)
        try:
            await _append(state, endpoint, job, token, "chunk", chunk)
        except (StaleLease, JobNotFound):
            raise _stale(job, worker_id) from None
    return json_response({"status": "ok"})


async def _fail_stream(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, job_id: str, reason: str
) -> None:
    """A chunk that can never be answered: the job's stream would silently miss it, so the job ends
    FAILED saying why, and the worker is told with a 400."""
    hosted = request.app[HOSTED]
    error = f"a stream chunk could not be stored: {reason}"
    async with hosted.lock(job_id):
        _, token = await _current(state, endpoint, worker_id, job_id)
        if token is not None:
            try:
                ended = await state.storage.finish(endpoint, job_id, token, JobState.FAILED, error=error)
            except (StaleLease, JobNotFound):
                pass
            else:
                await state.storage.drop_leases(endpoint, worker_id, [job_id])
                state.job_ended(ended, f"hosted-protocol worker {worker_id} sent an unstorable chunk")
    raise ApiError(400, f"{reason}; the job ends FAILED")
