"""`Expect: 100-continue` handling that invites a body only when the route would accept its size."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import EndpointConfig
from .state import STATE


def expect_within(limit_of: Callable[[EndpointConfig], int]) -> Callable[[web.Request], Awaitable[None]]:
    """The route's expect handler: no `100 Continue` for a declared length over the limit.

    The route then answers 413 at once without reading, so a client that waits for the
    invitation never uploads a body that would be refused.
    """

    async def expect(request: web.Request) -> None:
        value = request.headers.get("Expect", "")
        if value.lower() != "100-continue" or request.version < (1, 1):
            # Raised before the middlewares run, so it carries its own JSON body.
            raise web.HTTPExpectationFailed(
                text=json.dumps({"error": f"unsupported Expect header {value!r}"}),
                content_type="application/json",
            )
        length = request.content_length
        if length is not None:
            cfg = request.app[STATE].config.endpoint(request.match_info.get("endpoint_id", ""))
            if cfg is None or length > limit_of(cfg):
                return
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response

    return expect
