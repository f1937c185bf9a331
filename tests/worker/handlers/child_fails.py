"""Loads in the worker but not in a handler process (as a GPU library might)."""

import os

import worker_kit

if os.environ.get("WORKER_KIT_HANDLER_PROCESS"):
    raise RuntimeError("no GPU in this process")


@worker_kit.handler(isolation="process")
def gpu(job):
    return job.input


if __name__ == "__main__":
    worker_kit.start()
