"""Token streaming from an async generator: every `yield` is a stream chunk.

Clients read the chunks as they are produced with /stream (or Server-Sent Events); the job's
final output is also the list of all chunks, so /run + /status and /runsync see the whole text
too. `return_aggregate_stream=True` insists on that list (a stream over the result limit fails
the job rather than complete without it).

    python examples/stream_tokens.py --test-input '{"input": {"prompt": "the quick brown fox"}}'
"""

import asyncio

import worker_kit


@worker_kit.handler(return_aggregate_stream=True, timeout=60)
async def generate(job):
    words = job.input.get("prompt", "hello world").split()
    delay = float(job.input.get("delay", 0.05))
    for i, word in enumerate(words):
        await asyncio.sleep(delay)  # stands in for a model producing one token at a time
        yield word if i == 0 else " " + word


if __name__ == "__main__":  # so tests can import the handler without starting a worker
    worker_kit.start()
