"""What every request passes through: its failures answered as `{"error": ...}` (our ApiErrors,
aiohttp's own 404, 405 and 413, store failures as 503, crashes as 500), paths with dot segments
refused, and every answer counted in the metrics.

This is a wrapper put around each route's handler when the app is built (`guarded_routes`), and
one last resource in the router's index for what no route matches (`index_unmatched`), not an
aiohttp middleware: a middleware costs every request two coroutines more (aiohttp adds one of
its own beside it) and a lookup of the chain built for the route, about 13 k instructions, ~3 %
of a `/run` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, UrlMappingMatchInfo

from ..errors import StorageError, StoreUnavailable
from .activity import activity_channel
from .http import ApiError, respond
from .state import ServiceState

log = logging.getLogger("worker_kit.service")
access_log = logging.getLogger("worker_kit.service.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Seconds a client is told to wait (Retry-After) while the job store is unreachable.
STORE_RETRY_AFTER_S = 2
#: The metrics' route label of a request no route matched.
UNMATCHED = "(unmatched)"
#: An attribute a handler sets to True to be called as handler(request, state) by its guard:
#: `request.app[STATE]` is three calls of aiohttp's on every request, the guard has the state.
TAKES_STATE = "worker_kit_takes_state"


def guarded_routes(table: web.RouteTableDef, state: ServiceState) -> list[web.RouteDef]:
    """The table's routes, each handler wrapped by `guard` for this app."""
    guarded = []
    for route in table:
        assert isinstance(route, web.RouteDef), route  # no static files nor views among ours
        guarded.append(web.RouteDef(route.method, route.path, guard(route.handler, state), route.kwargs))
    return guarded


def guard(handler: Handler, state: ServiceState, *, label: str | None = None) -> Handler:
    """`handler`, with its failures answered and its answers counted (see the module's docstring).
    `label`: the route's in the metrics; by default its resource's canonical path."""
    metrics, publish = state.metrics, state.storage.notifier.publish
    monotonic = time.monotonic
    #: The route's metric label and whether a GET of it may change jobs (as every POST may),
    #: once known: its resource's canonical path is aiohttp's form, which the path given to the
    #: route table may not be ({name:regex}).
    facts: tuple[str, bool] | None = None if label is None else (label, False)
    takes_state = getattr(handler, TAKES_STATE, False)

    async def guarded(request: web.Request) -> web.StreamResponse:
        nonlocal facts
        started = monotonic()
        try:
            raw_path = request.raw_path
            if ("." in raw_path or "%" in raw_path) and _has_dot_segment(raw_path):
                raise ApiError(400, "path segments '.' and '..' are not allowed")
            response = await (handler(request, state) if takes_state else handler(request))  # type: ignore[call-arg]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = _failed(request, exc)
        if facts is None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED
            facts = (route, "/job-take" in route)  # the hosted protocol's GET job-take takes a job
        route, takes = facts
        method, status = request.method, response.status
        if status < 300 and (method == "POST" or takes):
            endpoint = request.match_info.get("endpoint_id")
            if endpoint is not None:
                # Something of the endpoint changed: wake this process's dashboard feeds (cheap: a
                # dict lookup when none is open).
                publish(activity_channel(endpoint))
        metrics.request(route, method, status, monotonic() - started)
        if access_log.isEnabledFor(logging.DEBUG):
            _log_access(request, status, started)
        return response

    guarded.__name__ = getattr(handler, "__name__", "handler")
    guarded.__qualname__ = getattr(handler, "__qualname__", guarded.__name__)
    guarded.__doc__ = handler.__doc__
    return guarded


def _failed(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer to a handler's exception."""
    if isinstance(exc, ApiError):
        return respond(request, exc.body(), status=exc.status, headers=exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # a redirect: aiohttp answers it
        return _http_error(request, exc)
    if type(exc) in (StorageError, StoreUnavailable):  # not the job rules' answers (JobNotFound...)
        return _store_failed(request, exc)
    log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
    return respond(request, {"error": "internal error in the service; it has been logged"}, status=500)


def _log_access(request: web.Request, status: int, started: float) -> None:
    method = request.method
    access_log.debug(
        "%s %s %d %.1fms",
        method,
        request.path_qs,
        status,
        (time.monotonic() - started) * 1000,
        extra={"method": method, "path": request.path, "status": status},
    )


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    if exc.content_type == "application/json" and exc.text:
        try:
            body = json.loads(exc.text)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return respond(request, body, status=exc.status, headers=headers)
    if exc.status == 404:
        message = f"no such route: {request.method} {request.path}"
    elif exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        message = f"method {request.method} is not allowed on {request.path}" + (
            f"; use {allowed}" if allowed else ""
        )
    elif exc.status == 413:
        message = f"request body too large: {exc.text or exc.reason}"
    else:
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return respond(request, {"error": message}, status=exc.status, headers=headers)


def _store_failed(request: web.Request, exc: Exception) -> web.Response:
    """503 for a store that is down, restarting or failing (a write it could not commit).

    Nothing acknowledged is lost, and clients and workers retry 503s with backoff, so this is an
    answer with one log line, not a crash with a traceback."""
    reason = "unreachable" if isinstance(exc, StoreUnavailable) else "failing"
    if "disk is full" in str(exc) or "No space left" in str(exc):  # SQLITE_FULL, ENOSPC
        reason = "full (no space left on its disk)"
    log.warning("%s %s: the job store is %s: %s", request.method, request.path, reason, exc)
    return respond(
        request,
        {"error": f"the job store is {reason}, retry shortly: {exc}", "retry_after": STORE_RETRY_AFTER_S},
        status=503,
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})


def _has_dot_segment(raw_path: str) -> bool:
    """Whether the path has a `.` or `..` segment (raw or percent-encoded): `/v2/../health`
    must not quietly be `/health`, nor `/v2/./status/x` an endpoint called `.`."""
    path = raw_path.split("?", 1)[0]
    if "." not in path and "%" not in path:
        return False  # nearly every path: no segment to look at
    return any(segment.lower() in _DOT_SEGMENTS for segment in path.split("/"))


# -- what no route matches -------------------------------------------------------------------------


def index_unmatched(router: web.UrlDispatcher, state: ServiceState) -> None:
    """Put `Unmatched` last in the router's index. Call it once every route is added: the app's
    on_startup does, after which aiohttp's router takes no more routes."""
    router.index_resource(Unmatched(router, state))


class Unmatched(AbstractResource):
    """The last entry of the router's index under `/`, which every lookup reaches when nothing
    more specific matched. It asks the router again (without itself) what aiohttp would answer,
    404 or 405 with the methods allowed, and lets its one route answer that as JSON, counted
    like any other answer. Only failed lookups pay for the second walk."""

    def __init__(self, router: web.UrlDispatcher, state: ServiceState) -> None:
        super().__init__()
        self._router = router
        self._route = _ErrorRoute(guard(_answer_unmatched, state, label=UNMATCHED), self)

    @property
    def canonical(self) -> str:
        return "/"

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        if request.get(_ASKING):
            return None, set()
        request[_ASKING] = True
        try:
            found = await self._router.resolve(request)
        finally:
            del request[_ASKING]
        error = found.http_exception
        if error is None:  # a route was added to the index after this one: let it answer
            return found, set()
        return _ErrorMatch(error, self._route), set()

    def url_for(self, **kwargs: str) -> Any:
        raise RuntimeError("Unmatched stands for no route")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("Unmatched is not for sub-applications")

    def get_info(self) -> Any:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0  # no routes of its own to list in routes()

    def __iter__(self) -> Any:
        return iter(())

    def __repr__(self) -> str:
        return "<Unmatched>"


_ASKING = web.RequestKey("worker_kit.unmatched_asking", bool)


class _ErrorMatch(UrlMappingMatchInfo):
    """A failed lookup (`http_exception` says which, as aiohttp's own MatchInfoError does),
    answered by our route."""

    __slots__ = ("_error",)

    def __init__(self, error: web.HTTPException, route: AbstractRoute) -> None:
        super().__init__({}, route)
        self._error = error

    @property
    def http_exception(self) -> web.HTTPException:
        return self._error


class _ErrorRoute(AbstractRoute):
    def __init__(self, handler: Handler, resource: Unmatched) -> None:
        super().__init__("*", handler, resource=resource)

    def url_for(self, *args: str, **kwargs: str) -> Any:
        raise RuntimeError("no URL leads to an unmatched route")

    @property
    def name(self) -> str | None:
        return None

    def get_info(self) -> Any:
        return {}


async def _answer_unmatched(request: web.Request) -> web.StreamResponse:
    error = request.match_info.http_exception
    assert error is not None
    raise error  # answered as JSON by the guard around this, as any handler's HTTPException
