"""Route lookup for the ~30 routes under `/v2/{endpoint_id}/`, by a dict lookup on what follows the
endpoint id instead of trying each route's pattern in turn.

aiohttp indexes a route by its path up to the first variable: every `/v2/{endpoint_id}/...`
route lands under `/v2`, and a request tries them one by one in registration order (a regular
expression and a coroutine each), so `/worker/exchange`, registered late, cost a worker's every
job ~16 failed matches (11 µs, against 2.4 µs for `/run`). `EndpointRoutes` stands in for them
in aiohttp's index: it keys each route by the fixed part of its path after the endpoint id
(`worker/exchange`, `worker/jobs`, `status`), looks a request's path up the same way aiohttp
does (the whole rest, then shorter and shorter prefixes), and lets only those routes match.

The answer is the one aiohttp would give: the routes themselves still match the path (their own
patterns) and the method, candidates are tried in registration order, and a path that some route
holds under another method still answers 405 with the methods allowed. Only aiohttp's index
changes: `app.router.routes()` and `resources()` list the same routes as before.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource
from yarl import URL

__all__ = ["PREFIX", "EndpointRoutes", "index_endpoint_routes"]

#: The routes this module indexes: everything under an endpoint.
PREFIX = "/v2/{endpoint_id}/"


def _key(canonical: str) -> str | None:
    """The fixed part of a route's path after PREFIX (`worker/jobs` for
    `/v2/{endpoint_id}/worker/jobs/{job_id}/finish`), or None when it has none."""
    if not canonical.startswith(PREFIX):
        return None
    rest = canonical[len(PREFIX) :]
    if "{" in rest:
        rest = rest.partition("{")[0].rpartition("/")[0]
    return rest.rstrip("/") or None


class EndpointRoutes(AbstractResource):
    """One entry of aiohttp's index standing for the routes under PREFIX (see the module's docstring)."""

    def __init__(self, resources: list[AbstractResource]) -> None:
        super().__init__()
        self._order = {id(r): n for n, r in enumerate(resources)}
        self._by_key: dict[str, list[AbstractResource]] = {}
        for resource in resources:
            key = _key(resource.canonical)
            assert key is not None, resource.canonical
            self._by_key.setdefault(key, []).append(resource)
        #: Keys no shorter key is a prefix of: a path equal to one of them needs no walk.
        self._alone = {
            key: found for key, found in self._by_key.items()
            if not any(key.startswith(other + "/") for other in self._by_key)
        }  # fmt: skip

    @property
    def canonical(self) -> str:
        return PREFIX.rstrip("/")

    def resolve(self, request: web.Request) -> Awaitable[Any]:
        """aiohttp awaits what this returns: with one candidate (nearly always), that route's own
        resolve, so the lookup adds no coroutine of its own to the request."""
        # path_safe keeps an encoded "/" (%2F) encoded, as aiohttp's own index walk does.
        path = request.rel_url.path_safe
        start = path.find("/", 4) + 1  # past "/v2/{endpoint id}/"
        found = self._alone.get(path[start:]) if start else _NONE
        if found is None:  # a route without variables after the endpoint needs no walk
            found = self._walk(path[start:])
        if len(found) == 1:
            return found[0].resolve(request)
        return _first_match(found, request)

    def _walk(self, rest: str) -> list[AbstractResource]:
        """The routes whose key is `rest` or a prefix of it (segment by segment), in registration
        order: aiohttp's own index walk, after the endpoint id."""
        found: list[AbstractResource] = []
        hits = 0
        while rest:
            hit = self._by_key.get(rest)
            if hit is not None:
                found += hit
                hits += 1
            rest = rest.rpartition("/")[0]
        if hits > 1:
            found.sort(key=lambda r: self._order[id(r)])
        return found

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("EndpointRoutes stands for several routes: build the URL from one of them")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("EndpointRoutes is not for sub-applications")

    def get_info(self) -> Any:
        return {"formatter": self.canonical}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0  # it holds no routes of its own: routes() lists each of them under its own resource

    def __iter__(self) -> Any:
        return iter(())

    def __repr__(self) -> str:
        return f"<EndpointRoutes {sum(map(len, self._by_key.values()))} routes under {PREFIX}>"


_NONE: list[AbstractResource] = []


async def _first_match(candidates: list[AbstractResource], request: web.Request) -> Any:
    """The first candidate that matches, else (None, the methods allowed on the path)."""
    allowed: set[str] = set()
    for resource in candidates:
        match, methods = await resource.resolve(request)
        if match is not None:
            return match, allowed
        allowed |= methods
    return None, allowed


def index_endpoint_routes(router: web.UrlDispatcher, *, first: int = 1) -> None:
    """Replace, in `router`'s index, the routes under PREFIX but the `first` ones (`/run`: it is
    tried first either way) by one EndpointRoutes, after those.

    Call it once every route is added (before the app starts); a route added afterwards is
    indexed by aiohttp as usual, after these. When some other route shares aiohttp's `/v2`
    entry (none does), the index is left as it is, so registration order keeps deciding."""
    ours = [r for r in router.resources() if _key(r.canonical) is not None]
    others = [r for r in router.resources() if r.canonical.startswith("/v2") and r not in ours]
    if len(ours) <= first or others:
        return
    for resource in ours[first:]:
        router.unindex_resource(resource)
    router.index_resource(EndpointRoutes(ours[first:]))
