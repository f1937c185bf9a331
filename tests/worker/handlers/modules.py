"""Answers which heavy HTTP libraries the process running the handler has imported."""

import sys

import worker_kit

HEAVY = ("aiohttp", "yarl", "multidict", "aiodns", "requests", "httpx")


@worker_kit.handler
def modules(job):
    return {"heavy": sorted(m for m in HEAVY if m in sys.modules), "httptools": "httptools" in sys.modules}


if __name__ == "__main__":
    worker_kit.start()
