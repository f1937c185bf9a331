"""A sync handler that sleeps in C (one time.sleep call), so it cannot be interrupted
before the sleep ends; timeout 1 s."""

import time

import worker_kit


@worker_kit.handler(timeout=1)
def nap(job):
    time.sleep(job.input["sleep"])
    return "woke"


if __name__ == "__main__":
    worker_kit.start()
