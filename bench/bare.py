"""The bare floors the suite compares against: the least an aiohttp program can do for the same
work, each in its own process, on uvloop.

    python -m bench.bare server --port P     # GET .../take, POST .../done, POST .../run,
                                             # GET .../status/{id}, POST .../push, GET .../sse
    python -m bench.bare client --url U --jobs N --concurrency C     # take+done per job
    python -m bench.bare producer --url U --tokens N                  # pushes tokens to the relay

The server keeps jobs in a dict: no storage, no validation, no auth. That is the point: a ratio
against it says how much of the machine our service spends beyond the HTTP floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

JOB = {"id": "0" * 32, "input": {"prompt": "hello"}, "token": "t" * 32}


def server_app() -> web.Application:
    stats: dict[str, Any] = {"first_take": None, "last_done": None, "done": 0}
    jobs: dict[str, dict[str, Any]] = {}
    tokens: list[str] = []
    more = asyncio.Event()
    ended = {"value": False}

    async def take(request: web.Request) -> web.Response:
        if stats["first_take"] is None:
            stats["first_take"] = time.time()
        return web.json_response(JOB)

    async def done(request: web.Request) -> web.Response:
        await request.read()
        stats["done"] += 1
        stats["last_done"] = time.time()
        return web.json_response({"ok": True})

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def run(request: web.Request) -> web.Response:
        body = await request.json()
        job_id = uuid.uuid4().hex
        jobs[job_id] = {"id": job_id, "status": "IN_QUEUE", "input": body.get("input")}
        return web.json_response({"id": job_id, "status": "IN_QUEUE"})

    async def status(request: web.Request) -> web.Response:
        job = jobs.get(request.match_info["job_id"])
        if job is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"id": job["id"], "status": job["status"], "delayTime": 0})

    async def push(request: web.Request) -> web.Response:
        body = await request.json()
        tokens.extend(body["tokens"])
        ended["value"] = bool(body.get("end"))
        more.set()
        return web.json_response({"next": len(tokens)})

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        while True:
            if sent < len(tokens):
                batch = tokens[sent:]
                sent += len(batch)
                events = (f"event: chunk\ndata: {json.dumps(t)}\n\n".encode() for t in batch)
                await response.write(b"".join(events))
                continue
            if ended["value"]:
                await response.write(b"event: status\ndata: {}\n\n")
                return response
            more.clear()
            await more.wait()

    app = web.Application()
    prefix = "/v2/{endpoint}"
    app.router.add_get(prefix + "/take", take)
    app.router.add_post(prefix + "/done", done)
    app.router.add_get(prefix + "/stats", get_stats)
    app.router.add_post(prefix + "/run", run)
    app.router.add_get(prefix + "/status/{job_id}", status)
    app.router.add_post(prefix + "/push", push)
    app.router.add_get(prefix + "/sse", sse)
    return app


async def client(url: str, jobs: int, concurrency: int) -> None:
    left = jobs
    async with aiohttp.ClientSession() as session:

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(url + "/take") as resp:
                    job = await resp.json()
                async with session.post(url + "/done", json={"id": job["id"], "output": None}) as resp:
                    await resp.read()

        await asyncio.gather(*(loop() for _ in range(concurrency)))


async def producer(url: str, n: int) -> None:
    """Tokens as fast as a loop makes them; whatever accumulated goes in the next request while
    the previous is in flight (what the worker runtime does)."""
    buffer: list[str] = []
    produced = asyncio.Event()
    finished = False

    async def make() -> None:
        nonlocal finished
        buffer.append(json.dumps({"t0": time.time()}))  # the first yield's time, for the reader
        for i in range(1, n):
            buffer.append(f"tok{i} ")
            if i % 100 == 0:
                produced.set()
                await asyncio.sleep(0)
        finished = True
        produced.set()

    async with aiohttp.ClientSession() as session:
        maker = asyncio.create_task(make())
        while True:
            await produced.wait()
            produced.clear()
            batch, buffer[:] = list(buffer), []
            end = finished and not buffer
            async with session.post(url + "/push", json={"tokens": batch, "end": end}) as resp:
                await resp.read()
            if end:
                break
            if buffer:
                produced.set()
        await maker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--jobs", type=int, required=True)
    c.add_argument("--concurrency", type=int, default=1)
    p = sub.add_parser("producer")
    p.add_argument("--url", required=True)
    p.add_argument("--tokens", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "server":
        web.run_app(server_app(), host="127.0.0.1", port=args.port, print=None, access_log=None,
                    loop=uvloop.new_event_loop())
    elif args.cmd == "client":
        uvloop.run(client(args.url, args.jobs, args.concurrency))
    else:
        uvloop.run(producer(args.url, args.tokens))


if __name__ == "__main__":
    main(sys.argv[1:])
