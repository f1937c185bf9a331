"""Stream input["n"] numbered chunks, one every input["every"] seconds."""

import time

import worker_kit


@worker_kit.handler
def tick(job):
    for i in range(job.input["n"]):
        yield i
        time.sleep(job.input["every"])


if __name__ == "__main__":
    worker_kit.start()
