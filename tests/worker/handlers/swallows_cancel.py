"""An async handler that swallows every cancellation, so it never ends; timeout 1 s."""

import asyncio

import worker_kit


@worker_kit.handler(timeout=1)
async def stubborn(job):
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    worker_kit.start()
