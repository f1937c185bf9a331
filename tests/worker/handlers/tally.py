"""Append "job_id attempt" to tally.txt in the working directory each time a job starts (so a
test can count how often each job ran), sleep input["sleep"] seconds (asyncio, default 0), and
return the input."""

import asyncio

import worker_kit

TALLY = open("tally.txt", "a", buffering=1)  # one line per job, kept open for the process's life


@worker_kit.handler
async def tally(job):
    TALLY.write(f"{job.id} {job.attempt}\n")
    await asyncio.sleep(job.input["sleep"] if isinstance(job.input, dict) else 0)
    return job.input


if __name__ == "__main__":
    worker_kit.start()
