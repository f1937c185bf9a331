"""Echo the input back; {"sleep": s} sleeps first (time.sleep, in the handler's thread)."""

import time

import worker_kit


@worker_kit.handler
def echo(job):
    if isinstance(job.input, dict) and job.input.get("sleep"):
        time.sleep(job.input["sleep"])
    return {"echo": job["input"], "id": job["id"]}


if __name__ == "__main__":
    worker_kit.start()
