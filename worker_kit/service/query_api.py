"""/status-sync (a /status held until the job ends) and /requests (an endpoint's recent jobs).

/status-sync waits on the job's change notifications (storage push), re-reading only when
woken, and answers exactly what /status would. /requests pages through `Storage.list_jobs`
with an opaque cursor; every page is an index walk, whatever the number of stored jobs.
"""

from __future__ import annotations

import base64
import binascii
import json

from aiohttp import web

from ..job import JobRecord, JobState
from ..protocol import API_PREFIX
from ..protocol.answers import RequestsPage
from ..storage.base import MAX_PAGE, job_channel
from .client_api import MAX_POLICY_MS, client_op, job_id_of, not_found
from .config import EndpointConfig
from .http import ApiError, client_gone, query_int, read_optional_object, respond, wait_until
from .state import ServiceState

routes = web.RouteTableDef()

STATUS_SYNC_DEFAULT_WAIT_MS = 60_000
STATUS_SYNC_MAX_WAIT_MS = 300_000
REQUESTS_DEFAULT_LIMIT = 50
_SMALL_BODY = 64 * 1024


@routes.route("GET", API_PREFIX + "/status-sync/{job_id}")
@routes.route("POST", API_PREFIX + "/status-sync/{job_id}")
@client_op("status")
async def status_sync(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    ttl = query_int(request, "ttl", default=None, minimum=0, maximum=MAX_POLICY_MS)
    wait_ms = query_int(
        request, "wait", default=STATUS_SYNC_DEFAULT_WAIT_MS, minimum=0, maximum=STATUS_SYNC_MAX_WAIT_MS
    )
    assert wait_ms is not None
    if request.method == "POST":
        await read_optional_object(request, _SMALL_BODY, "/status-sync")
    latest: JobRecord | None = None

    async def ended() -> JobRecord | None:
        nonlocal latest
        latest = await state.storage.get(endpoint, job_id)
        if latest is None:
            raise not_found(job_id)
        return latest if latest.state.is_terminal or client_gone(request) else None

    await wait_until(
        state.storage,
        job_channel(job_id),
        wait_ms / 1000,
        ended,
        state.shutdown,
        gone=lambda: client_gone(request),
    )
    assert latest is not None
    if ttl is not None:
        # As /status?ttl= does: keep the result ttl from now (or from the end, if still running).
        latest = await state.storage.set_retention(endpoint, job_id, ttl)
        if latest is None:
            raise not_found(job_id)
    return respond(request, latest.to_status())


# -- /requests -------------------------------------------------------------------------------------


def encode_cursor(created_at: float, job_id: str) -> str:
    """The opaque /requests cursor naming a page's last job (decode_cursor reads it back)."""
    raw = json.dumps([created_at, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise ValueError("bad time")
        if not isinstance(job_id, str):
            raise ValueError("bad id")
        return float(created_at), job_id
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(
            400, "cursor is not one this service gave out: pass the 'cursor' of a /requests answer"
        ) from None


def parse_states(request: web.Request) -> set[JobState] | None:
    raw = [part.strip() for value in request.query.getall("status", []) for part in value.split(",")]
    raw = [part for part in raw if part]
    if not raw:
        return None
    states: set[JobState] = set()
    for name in raw:
        try:
            states.add(JobState(name.upper()))
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise ApiError(400, f"unknown status {name!r} (known: {known})") from None
    return states


def parse_include(request: web.Request) -> set[str]:
    raw = {part.strip() for value in request.query.getall("include", []) for part in value.split(",")}
    raw.discard("")
    unknown = raw - {"input", "output"}
    if unknown:
        raise ApiError(400, f"include takes input and/or output, not {', '.join(sorted(unknown))}")
    return raw


@routes.get(API_PREFIX + "/requests")
@client_op("requests")
async def requests_page(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    limit = query_int(request, "limit", default=REQUESTS_DEFAULT_LIMIT, minimum=1, maximum=MAX_PAGE)
    assert limit is not None
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    states = parse_states(request)
    include = parse_include(request)
    page = await state.storage.list_jobs(
        endpoint, limit=limit, after=after, states=states, include_io=bool(include)
    )
    last = page.jobs[-1] if page.has_more and page.jobs else None
    cursor = encode_cursor(last.created_at, last.id) if last is not None else None
    return respond(request, RequestsPage.encode(page.jobs, include, page.total, page.has_more, cursor))
