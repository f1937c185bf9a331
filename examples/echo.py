"""The smallest worker: return the job's input unchanged.

    python examples/echo.py --test-input '{"input": {"text": "hello"}}'
    python examples/echo.py --serve          # the whole client API on http://127.0.0.1:8000/v2/local
    WORKER_KIT_URL=http://queue:8000/v2/echo python examples/echo.py    # a real worker
"""

import worker_kit


@worker_kit.handler
def echo(job):
    return job.input


if __name__ == "__main__":  # so tests can import the handler without starting a worker
    worker_kit.start()
