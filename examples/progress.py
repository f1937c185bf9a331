"""Progress reporting: `job.progress(value)` publishes the latest progress of a running job.

While the job runs, /status shows the latest value as `output`; progress updates are
ordered with the result, so a late update can never hide the final output.

    python examples/progress.py --test-input '{"input": {"steps": 5}}'
"""

import asyncio

import worker_kit


@worker_kit.handler
async def train(job):
    steps = int(job.input.get("steps", 5))
    loss = 1.0
    for step in range(1, steps + 1):
        await asyncio.sleep(0.05)  # one unit of real work
        loss *= 0.5
        job.progress({"step": step, "of": steps, "loss": loss})
    return {"steps": steps, "final_loss": loss}


if __name__ == "__main__":  # so tests can import the handler without starting a worker
    worker_kit.start()
