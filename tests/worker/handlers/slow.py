"""Sleep input["sleep"] seconds in short Python steps (so it can be interrupted), then
report which attempt ran it."""

import time

import worker_kit


@worker_kit.handler
def slow(job):
    end = time.monotonic() + job.input["sleep"]
    while time.monotonic() < end:
        time.sleep(0.02)
    return {"slept": job.input["sleep"], "attempt": job.attempt}


if __name__ == "__main__":
    worker_kit.start()
