"""OpenAI-compatible streaming: time to first token and tokens per second through
/openai/v1/chat/completions with "stream": true, next to the same job read through /stream SSE
and next to a bare aiohttp server producing the same frames itself (run by hand).

    python bench/bench_openai.py [--tokens 2000] [--rounds 5] [--ttft-requests 20]

Four processes on 127.0.0.1: `worker-kit serve` (SQLite in a temporary directory, rate limits
off), a worker running examples/openai_compatible.py (the echo "model": one chat.completion.chunk
frame per word, no delay), a bare aiohttp app that writes the same frames for the same request
with no queue and no worker (the ceiling), and this process, which reads every answer as raw
Server-Sent Events with aiohttp and parses every frame the same way in every mode.

- time to first token: from sending the request to holding the first frame with content, for a
  two-word prompt; median over --ttft-requests requests per mode;
- tokens per second: a --tokens-word prompt; the timer starts at the first token received and stops
  at the last, so queueing and start-up are not counted (they are in the first figure); median
  over --rounds rounds, the modes interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python put bench/ itself first on the path; the project root makes `bench` a package.
sys.path.insert(0, str(ROOT))
from bench import procs  # noqa: E402

EXAMPLE = ROOT / "examples" / "openai_compatible.py"
ENDPOINT = "bench-openai"
CONFIG = """
log_level = "warning"
[defaults]
rate_limits = false
backpressure = false
"""


# -- the bare baseline (its own process) ---------------------------------------------------------------
def bare_server() -> None:
    """Writes the frames examples/openai_compatible.py would, straight from the HTTP handler."""
    from aiohttp import web

    sys.path.insert(0, str(ROOT / "examples"))
    from openai_compatible import reply_words

    from worker_kit import openai_compat as oa

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        answer_id, model = oa.new_id(), body.get("model", "m")
        words = reply_words(body)
        await response.write(oa.sse(oa.chat_chunk(answer_id, model, role="assistant", content="")).encode())
        for i, word in enumerate(words):
            await asyncio.sleep(0)  # as the example's handler does between tokens
            token = word if i == 0 else " " + word
            await response.write(oa.sse(oa.chat_chunk(answer_id, model, token)).encode())
        await response.write(oa.sse(oa.chat_chunk(answer_id, model, finish_reason="stop")).encode())
        await response.write(oa.DONE.encode())
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)

    procs.serve_announced(app)


# -- readers: each yields the content of every token frame -------------------------------------------------
def _content(frame: str) -> str | None:
    if not frame.startswith("data: ") or frame == "data: [DONE]":
        return None
    choices = json.loads(frame[6:]).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or None


async def _frames(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    buffer = ""
    async for piece in resp.content.iter_any():
        buffer += piece.decode()
        *frames, buffer = buffer.split("\n\n")
        for frame in frames:
            yield frame


async def via_openai(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> AsyncIterator[str]:
    async with session.post(f"{url}/openai/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for frame in _frames(resp):
            text = _content(frame)
            if text:
                yield text


async def via_stream_sse(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> AsyncIterator[str]:
    job_input = {"openai_route": "/v1/chat/completions", "openai_input": body}
    async with session.post(f"{url}/run", json={"input": job_input}) as resp:
        job_id = (await resp.json())["id"]
    headers = {"Accept": "text/event-stream"}
    async with session.get(f"{url}/stream/{job_id}", headers=headers) as resp:
        async for event in _frames(resp):
            lines = dict(line.split(": ", 1) for line in event.split("\n") if ": " in line)
            if lines.get("event", "chunk") == "chunk" and "data" in lines:  # chunks are unnamed events
                text = _content(json.loads(lines["data"])["output"].strip())
                if text:
                    yield text
            elif lines.get("event") in ("status", "error"):
                return


async def via_bare(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> AsyncIterator[str]:
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        async for frame in _frames(resp):
            text = _content(frame)
            if text:
                yield text


Reader = Callable[[aiohttp.ClientSession, str, dict[str, Any]], AsyncIterator[str]]


def _body(words: int) -> dict[str, Any]:
    prompt = " ".join(f"w{i}" for i in range(words))
    return {"model": "worker-kit-echo", "messages": [{"role": "user", "content": prompt}], "stream": True}


async def first_token_ms(session: aiohttp.ClientSession, url: str, reader: Reader) -> float:
    started = time.perf_counter()
    first = None
    async for _ in reader(session, url, _body(2)):
        if first is None:
            first = time.perf_counter()
    assert first is not None
    return (first - started) * 1000


async def tokens_per_s(session: aiohttp.ClientSession, url: str, reader: Reader, words: int) -> float:
    stamps = [time.perf_counter() async for _ in reader(session, url, _body(words))]
    assert len(stamps) == words + 1, len(stamps)  # "echo:" and one token per word
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])




async def wait_for_worker(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        async with session.get(f"{url}/health") as resp:
            workers = (await resp.json())["workers"]
        if workers["idle"] + workers["running"]:
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the worker did not start")


def main(args: argparse.Namespace) -> None:
    running: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "bench.toml")
        config.write_text(CONFIG)
        try:
            serve = [sys.executable, "-m", "worker_kit", "serve", "--port", "0",
                     "--storage", f"sqlite:///{tmp}/bench.db", "--config", str(config)]  # fmt: skip
            server, base = procs.start_announced(serve)
            running.append(server)
            url = f"{base}/v2/{ENDPOINT}"
            env = {**os.environ, "WORKER_KIT_URL": url, "WORKER_KIT_LOG_LEVEL": "warning"}
            worker = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stderr=subprocess.DEVNULL)
            running.append(worker)
            bare, bare_url = procs.start_announced([sys.executable, __file__, "--bare"])
            running.append(bare)
            modes: dict[str, tuple[Reader, str]] = {
                "`/openai/v1/chat/completions`, stream": (via_openai, url),
                "`/run` + `/stream` SSE, same job": (via_stream_sse, url),
                "bare aiohttp SSE (no queue, no worker)": (via_bare, bare_url),
            }
            results = asyncio.run(measure(url, modes, args))
        finally:
            for proc in running:
                proc.terminate()
                proc.wait(10)
    report(results, args)


async def measure(
    url: str, modes: dict[str, tuple[Reader, str]], args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    async with aiohttp.ClientSession() as session:
        await wait_for_worker(session, url)
        return await _measure(session, modes, args)


async def _measure(
    session: aiohttp.ClientSession, modes: dict[str, tuple[Reader, str]], args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    ttft: dict[str, list[float]] = {name: [] for name in modes}
    rates: dict[str, list[float]] = {name: [] for name in modes}
    for reader, url in modes.values():  # warm up connections and code paths
        await tokens_per_s(session, url, reader, 50)
    for _ in range(args.ttft_requests):
        for name, (reader, url) in modes.items():
            ttft[name].append(await first_token_ms(session, url, reader))
    for round_ in range(args.rounds):
        for name, (reader, url) in modes.items():
            rates[name].append(await tokens_per_s(session, url, reader, args.tokens))
        print(f"  round {round_ + 1}: " + ", ".join(f"{rates[n][-1]:,.0f}" for n in modes), file=sys.stderr)
    return {name: (statistics.median(ttft[name]), statistics.median(rates[name])) for name in modes}


def report(results: dict[str, tuple[float, float]], args: argparse.Namespace) -> None:
    bare_rate = list(results.values())[-1][1]
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"\nMachine: {os.cpu_count()} CPUs, {python}, "
          f"aiohttp {aiohttp.__version__}; {time.strftime('%Y-%m-%d')}; {args.tokens} tokens per stream, "
          f"median of {args.rounds} rounds; first token: median of {args.ttft_requests} requests.\n")
    print("| mode | first token ms | tokens/s | tokens/s vs bare |")
    print("|---|---:|---:|---:|")
    for name, (ttft, rate) in results.items():
        print(f"| {name} | {ttft:.1f} | {rate:,.0f} | {rate / bare_rate:.2f} |")
    print(json.dumps({k: list(v) for k, v in results.items()}), file=sys.stderr)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ttft-requests", type=int, default=20)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse()
    if parsed.bare:
        bare_server()
    else:
        main(parsed)
