"""The hosted service's worker protocol (job-take, job-stream, job-done, job-stop, ping), so that a
worker_kit handler runs there unchanged.

`worker_kit.start()` picks this transport when the hosted service's environment is present
(`RUNPOD_WEBHOOK_GET_JOB` and the rest, see `HostedEnv`) and `WORKER_KIT_URL` is not set. The
runtime above it is the same as with the native protocol: no sleeps between jobs, results retried
until delivered, sync handlers off the event loop, execution timeouts, chunks of at most 1 MB.

What the protocol lacks, and what that costs (docs/migrating.md says the same to users):
- No fencing tokens: the job id stands in for the token, so the service cannot refuse a report from
  an attempt it has given to another worker.
- No sequence numbers on chunks: each chunk is POSTed in turn and the next one only after the
  previous was accepted; a retry after an answer lost on the way back can repeat one chunk.
- No hand-back: a job released during a drain is simply no longer listed in pings, and comes back
  when the service's lease on it expires (the attempt counts).
- No TIMED_OUT report: a job the worker timed out is reported as an error (FAILED); the service's
  own timeout, when it fires first, decides the state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import ServiceUnavailable
from ..job import JobState
from ..protocol import HostedJob, HostedReport, StopList, hosted
from .hosted_env import HostedEnv
from .transport import ClaimedJob, Final, Link, Transport, refusal

if TYPE_CHECKING:
    from .http_client import HttpClient

log = logging.getLogger("worker_kit.worker")

#: The hosted SDK cuts a job-take after 90 s; a take held longer by the service could hand out a
#: job on a connection nobody reads any more. Stay below it.
TAKE_TIMEOUT_S = 85.0
#: How long one report (result, chunk, progress, ping) may take before it counts as failed.
REPORT_TIMEOUT_S = 60.0


def _with_query(template: str) -> str:
    # The templates carry their own query string; parameters are appended with '&', so make sure
    # there is a '?' to append to (the SDK does not, and its parameters land in the path).
    return template if "?" in template else template + "?"


class HostedTransport(Transport):
    """`Transport` over the hosted service's worker routes (JSON bodies, key sent as it is)."""

    def __init__(self, env: HostedEnv) -> None:
        self.env = env
        self.worker_id = env.pod_id
        take = _with_query(env.get_job.replace("$ID", env.pod_id))
        self._take_url = take
        self._batch_url = take.replace("/job-take/", "/job-take-batch/")
        self._stop_url = take.replace("/job-take/", "/job-stop/")
        self._done = _with_query(env.post_output.replace("$RUNPOD_POD_ID", env.pod_id))
        self._stream = _with_query(env.post_stream.replace("$RUNPOD_POD_ID", env.pod_id))
        self._ping = _with_query(env.ping.replace("$RUNPOD_POD_ID", env.pod_id)) if env.ping else None
        self._headers = {"Content-Type": "application/json"}
        if env.api_key:
            self._headers["Authorization"] = env.api_key  # as the hosted SDK sends it: no "Bearer"
        self.link = Link(take.split("?", 1)[0])
        self._http: HttpClient | None = None
        #: Per job: the next output seq the service has (no seq on this wire: counted here), and
        #: whether any chunk was streamed (the final report says isStream=true then).
        self._next_seq: dict[str, int] = {}
        self._streamed: set[str] = set()

    async def open(self) -> None:
        from .http_client import HttpClient

        self._http = HttpClient(self._headers)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _request(self, method: str, url: str, body: Any, timeout_s: float) -> tuple[int, Any]:
        if self._http is None:
            raise ServiceUnavailable("the worker's transport is not open")
        data = None if body is None else protocol.dumps_json(body).encode()
        try:
            resp = await self._http.request(method, url, data, timeout_s)
        except (OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self.link.failed(reason)
            raise ServiceUnavailable(reason) from None
        status, raw, retry_after = resp.status, resp.body, resp.headers.get("retry-after")
        if status >= 500:
            self.link.failed(f"HTTP {status}")
        else:
            self.link.ok()
        try:
            payload = protocol.decode(raw, None) if raw else None
        except ValueError:
            payload = {"error": raw[:200].decode("utf-8", "replace")}
        if status >= 300:
            raise refusal(status, payload, retry_after)
        return status, payload

    # -- taking jobs -----------------------------------------------------------------------------
    async def claim(
        self, max_jobs: int, wait_ms: int, *, concurrency: int, running: int
    ) -> tuple[list[ClaimedJob], int | None]:
        if max_jobs > 1:
            url = self._batch_url + hosted.take_query(bool(running), max_jobs)
        else:
            url = self._take_url + hosted.take_query(bool(running))
        try:
            status, payload = await self._request("GET", url, None, TAKE_TIMEOUT_S)
        except ServiceUnavailable as exc:
            if "TimeoutError" in str(exc):
                return [], None  # the take was cut on our side: no job was handed to us
            raise
        if status == 204 or payload is None:
            return [], None
        jobs = []
        for taken in HostedJob.decode_take(payload):
            self._next_seq[taken.id] = 0
            jobs.append(taken.claimed())
        return jobs, None

    # -- liveness and stops -------------------------------------------------------------------------
    async def heartbeat(
        self, leases: dict[str, str], wait_ms: int, *, concurrency: int, running: int
    ) -> tuple[list[tuple[str, str]], int | None]:
        """A ping listing the jobs in progress (what the hosted service keeps leases by), then a
        job-stop poll held at most one ping interval, so the next ping is never late."""
        if self._ping is not None:
            await self._request("GET", self._ping + hosted.ping_query(list(leases)), None, REPORT_TIMEOUT_S)
        hold_ms = min(wait_ms, self.env.ping_interval_ms)
        status, payload = await self._request(
            "GET", self._stop_url + hosted.hold_query(hold_ms), None, hold_ms / 1000 + REPORT_TIMEOUT_S
        )
        stops = StopList.decode(payload) if status == 200 else []
        # The protocol says only "stop": cancelled or timed out is the service's to record.
        return [(job_id, protocol.STOP_CANCELLED) for job_id in stops if job_id in leases], None

    # -- reports ------------------------------------------------------------------------------------
    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        next_seq = self._next_seq.get(job_id, 0)
        for packed in items:
            item = protocol.unpack(packed)
            seq = item["seq"]
            if seq < next_seq:
                continue  # sent by an earlier try of this batch
            if item["kind"] == "chunk":
                await self._report(self._stream, job_id, HostedReport.chunk(item["data"]), stream=False)
                self._streamed.add(job_id)
            else:
                await self._report(self._done, job_id, HostedReport.progress(item["data"]), stream=False)
            next_seq = self._next_seq[job_id] = seq + 1
        return next_seq

    async def finish(self, job_id: str, token: str, final: Final, items: list[bytes]) -> None:
        if items:
            await self.output(job_id, token, items)
        if final.state is JobState.COMPLETED:
            body = HostedReport.result(None if final.output is None else protocol.unpack(final.output))
        else:
            body = HostedReport.failure(final.error or final.state.value)
        await self._report(self._done, job_id, body, stream=job_id in self._streamed)
        self._forget(job_id)

    async def release(self, job_id: str, token: str) -> None:
        # No hand-back on this wire: the job is no longer listed in pings, and the service's lease
        # on it brings it back (module docstring).
        self._forget(job_id)

    async def _report(self, template: str, job_id: str, body: Any, *, stream: bool) -> None:
        url = template.replace("$ID", job_id) + hosted.report_query(stream)
        await self._request("POST", url, body, REPORT_TIMEOUT_S)

    def _forget(self, job_id: str) -> None:
        self._next_seq.pop(job_id, None)
        self._streamed.discard(job_id)
