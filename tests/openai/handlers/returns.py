"""A worker for the answer tests: returns `openai_input["answer"]` as the job's output."""

import worker_kit


@worker_kit.handler(timeout=60)
async def serve(job):
    return (job.openai_input or {}).get("answer")


if __name__ == "__main__":
    worker_kit.start()
