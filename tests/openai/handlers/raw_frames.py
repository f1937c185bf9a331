"""A worker for the relay tests: answers /v1/chat/completions with "stream": true by yielding
what the test asks in `openai_input["script"]`: strings (sent as they are, frames may be split),
objects (framed by the service), {"sleep": s} pauses; never sends [DONE] itself."""

import asyncio

import worker_kit


@worker_kit.handler(timeout=600)
async def serve(job):
    for step in (job.openai_input or {}).get("script", []):
        if isinstance(step, dict) and "sleep" in step:
            await asyncio.sleep(step["sleep"])
        else:
            yield step


if __name__ == "__main__":
    worker_kit.start()
